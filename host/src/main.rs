//! `hako`: sandboxed R workers on webR + wasmtime. Parses the command line
//! and dispatches to the library (`hako::*`).

use hako::{assets, bench, client, daemon, eval, host, pkg, startup, user_cmd};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hako",
    version,
    about = "Run R you do not fully trust: webR under wasmtime, in a capability sandbox"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Start in a new session (setsid), away from the signals of the
    /// terminal the parent runs in (the R package starts hosts and daemons so).
    #[arg(long, global = true)]
    new_session: bool,
    /// Exit (as on SIGTERM) when process PID ends: the R package passes its
    /// own, so that its host and daemons never outlive it.
    #[arg(long, global = true, value_name = "PID")]
    watch_pid: Option<u32>,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, translate and verify webR's assets.
    Assets(assets::AssetsArgs),
    /// Evaluate R code in a fresh sandbox and print what R prints.
    Eval(eval::EvalArgs),
    /// Dispatch R tasks to sandboxed daemons (local and remote, over TLS).
    Host(host::HostArgs),
    /// Lend this machine's cores to a host: run its tasks in a sandbox.
    Daemon(daemon::DaemonArgs),
    /// Bridge the client link on stdin/stdout to a remote host.
    Client(client::ClientArgs),
    /// Compiled R packages for the sandbox: build, install, list, remove.
    Pkg(pkg::PkgArgs),
    /// The named users and volunteers of a host (`--identity DIR`).
    User(user_cmd::UserArgs),
    /// Measure task round trips and throughput through the client link.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    startup::close_inherited_fds();
    let cli = Cli::parse();
    if cli.new_session {
        startup::new_session();
    }
    if let Some(pid) = cli.watch_pid {
        startup::watch_pid(pid);
    }
    match cli.command {
        Command::Assets(a) => assets::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Host(a) => host::run(a),
        Command::Daemon(a) => daemon::run(a),
        Command::Client(a) => client::run(a),
        Command::Pkg(a) => pkg::run(a),
        Command::Bench(a) => bench::run(a),
        Command::User(a) => user_cmd::run(a),
    }
}
