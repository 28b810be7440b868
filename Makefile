# research-relay: the two commands a new user needs are `make demo` and `make test`.
.PHONY: demo dev test token lint fmt build clean bench-reconciler

demo: ## Run the whole pipeline locally once: submit, webhook, reconciler, e-mail
	dev/scripts/demo.sh

dev: ## Keep the local stack running (front 3000, simulator 4010, moto 5000)
	dev/scripts/dev.sh

test: ## Start moto, run every test, stop moto
	dev/scripts/test.sh

token: ## Print a local bearer token for the front (SUB and EMAIL overridable)
	@cargo run --quiet -p local-front -- token $(or $(SUB),demo-user) $(or $(EMAIL),reader@example.com)

bench-reconciler: ## Time one reconciler run over 1,000 due jobs against a slow provider (own moto; ARGS=--jobs N ...)
	dev/scripts/bench-reconciler.sh $(ARGS)

lint: ## Formatting and clippy, as CI runs them
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

build: ## Release build of the three Lambdas, as SAM builds them
	cargo build --release -p submit-api -p webhook-receiver -p reconciler

clean:
	cargo clean
	rm -rf .local out
