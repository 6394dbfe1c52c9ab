//! `aviary`: the server binary. Everything happens in [`aviary::entry::main`], so
//! the end-to-end tests can run the very same code as separate processes.

fn main() -> std::process::ExitCode {
    aviary::entry::main()
}
