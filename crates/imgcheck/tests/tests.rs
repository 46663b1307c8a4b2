//! End-to-end tests against real misbehaving servers on 127.0.0.1, as one test binary.

mod checker;
mod cli;
mod support;
