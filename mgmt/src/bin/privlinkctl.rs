//! `privlinkctl`: the command line of privlinkd's management socket. See [`mgmt::cli`].
#![deny(unsafe_code)]

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let env_socket = std::env::var(mgmt::cli::SOCKET_ENV).ok();
    let code = mgmt::cli::run(
        &argv,
        env_socket.as_deref(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
