//! `NF_CUDA_SYNC_EACH=1` in the environment keeps sync-each on whatever the code asks: the GPU
//! check reruns a failing test or `nf train` with it to name the faulting call, and a test that
//! turns it off for its own cases (as the GPU training test does for all but one) must not undo
//! that. Its own test binary: it sets the variable for the whole process.
use nf_cuda::emu::{EmuBackend, EmuOptions};

#[test]
fn the_environment_keeps_sync_each_on() {
    std::env::set_var(nf_cuda::engine::SYNC_EACH_ENV, "1");
    let mut be = EmuBackend::emulated(64, EmuOptions::default())
        .unwrap_or_else(|e| panic!("cannot build the emulated kernels: {e}"));
    assert!(be.sync_each());
    be.set_sync_each(false);
    assert!(
        be.sync_each(),
        "set_sync_each(false) undid NF_CUDA_SYNC_EACH=1"
    );
    std::env::remove_var(nf_cuda::engine::SYNC_EACH_ENV);
    let mut be = EmuBackend::emulated(64, EmuOptions::default()).unwrap();
    assert!(!be.sync_each());
    be.set_sync_each(true);
    assert!(be.sync_each());
    be.set_sync_each(false);
    assert!(!be.sync_each());
}
