//! The `fullsend` binary: parse arguments, run, exit with a code from `exit.rs`.

fn main() -> std::process::ExitCode {
    fullsend::run()
}
