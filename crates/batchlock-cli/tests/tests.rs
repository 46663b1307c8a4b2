//! End-to-end tests: the real `batchlock` binary, real child processes, real signals, and a
//! real SQLite file per test.

mod dynamodb;
mod exit_codes;
mod operator;
mod run;
mod util;
