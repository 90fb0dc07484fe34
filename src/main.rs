//! `wadispatch`: parse the command line and hand over to the library.

#[global_allocator]
static ALLOCATOR: wadispatch::Allocator = wadispatch::Allocator;

fn main() -> std::process::ExitCode {
    abort_on_panic();
    wadispatch::cli::main()
}

/// A panic on any thread ends the process, as `panic = "abort"` would: an
/// actor or task that panicked must not leave a daemon that looks alive
/// but has stopped sending (systemd restarts it; docs/ARCHITECTURE.md,
/// "Panics"). Done here rather than in the release profile so release
/// and benchmark builds share one compiled dependency set (benchmarks
/// always unwind).
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        tracing::error!(panic = %info, "a panic ends the process");
        std::process::abort();
    }));
}
