//! The node process the end-to-end tests spawn: exactly the `aviary` entry point,
//! plus one rule — it exits when its standard input closes. The test process holds
//! the other end, so nodes never outlive the tests that started them, however
//! those end.

fn main() -> std::process::ExitCode {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        loop {
            match std::io::Read::read(&mut std::io::stdin(), &mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
    aviary::entry::main()
}
