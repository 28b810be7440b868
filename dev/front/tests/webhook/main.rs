//! The webhook receiver against the emulator, the simulator and the local front: exactly one
//! stored result and one e-mail per job under races, replays and reordering; every forged or
//! malformed delivery refused without a write; and each webhook field report as a test.
//!
//! Needs the emulator named by `RESEARCH_RELAY_TEST_MOTO` (`make test` starts it).

mod cases;
mod forged;
mod race;
mod support;
