//! NCCL (the cargo feature `nccl`): nf-core's [`Collective`] across GPUs, one GPU per rank.
//!
//! A step's collective, the mean of a segment's parameter gradients over the ranks, runs on the
//! backend's own stream over its arena ([`Collective::all_reduce_mean_in_arena`]): queued after
//! the backward kernels that wrote the gradients and before the update that reads them, with no
//! copy through the host and no wait. The small collectives (statistics, BN running statistics
//! when asked through host memory, the hash compared before files are written, broadcasts) go
//! through a device buffer of their size.
//!
//! Joining a group needs an NCCL unique id made by one rank ([`unique_id`]) and given to every
//! other before each calls [`Nccl::new`]: nf-host broadcasts it over MPI. A world of one needs
//! no other process (the GPU check's smoke run).
//!
//! cudarc loads `libnccl` at run time and panics when it is missing; [`detect_nccl`] checks
//! first, and every entry point here refuses in one line ([`CudaError::Unavailable`]) instead.
use std::ffi::c_char;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtrMut, DeviceRepr};
use cudarc::nccl::{result as nccl, sys as nccl_sys};
use nf_core::collective::{Collective, CollectiveError};
use nf_core::region::Region;

use crate::error::{failed, CudaError};
use crate::CudaBackend;

/// Bytes of an NCCL unique id: what rank 0 makes ([`unique_id`]) and every rank needs to join.
pub const NCCL_ID_BYTES: usize = 128;

/// The line of a missing NCCL library. cudarc looks for it under the unversioned name (and
/// CUDA-versioned ones), not under NCCL's own soname `libnccl.so.2`.
pub const NCCL_MISSING: &str = "no NCCL library found (libnccl.so): install NCCL's development \
     files (Debian/Ubuntu: libnccl-dev), or put a link named libnccl.so to libnccl.so.2 (of \
     NVIDIA's libnccl2 or the PyPI wheel nvidia-nccl) in a folder on LD_LIBRARY_PATH";

/// Checks, without panicking, whether cudarc can load NCCL.
///
/// # Errors
/// [`CudaError::Unavailable`] with [`NCCL_MISSING`].
pub fn detect_nccl() -> Result<(), CudaError> {
    // SAFETY: only tries to load the library under cudarc's names; its initialisers have no
    // preconditions on this process.
    if unsafe { nccl_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::Unavailable(NCCL_MISSING.to_string()))
    }
}

/// The NCCL library's version as `(major, minor, patch)`.
///
/// # Errors
/// [`detect_nccl`]'s, or the call's.
pub fn nccl_version() -> Result<(i32, i32, i32), CudaError> {
    detect_nccl()?;
    let v = nccl::get_nccl_version().map_err(|e| nccl_err("ncclGetVersion", e))?;
    // NCCL_VERSION_CODE: major * 1000 + minor * 100 + patch up to 2.8, then * 10000 + * 100.
    Ok(if v >= 20900 {
        (v / 10000, v / 100 % 100, v % 100)
    } else {
        (v / 1000, v / 100 % 10, v % 100)
    })
}

/// A new NCCL unique id (made once, by one rank, and given to every rank of the group).
///
/// # Errors
/// [`detect_nccl`]'s, or the call's.
pub fn unique_id() -> Result<[u8; NCCL_ID_BYTES], CudaError> {
    detect_nccl()?;
    let id = nccl::get_uniqueid().map_err(|e| nccl_err("ncclGetUniqueId", e))?;
    Ok(id.internal.map(|c| c as u8))
}

fn nccl_err(what: &str, e: nccl::NcclError) -> CudaError {
    failed(format!("{what}: {:?}", e.0))
}

/// One rank of a group of GPUs: an NCCL communicator on the backend's stream, over its arena.
pub struct Nccl {
    comm: nccl_sys::ncclComm_t,
    stream: Arc<CudaStream>,
    /// The arena's base address, 0 once the backend freed it.
    base: Arc<AtomicU64>,
    /// The arena's length in `f32` elements.
    len: usize,
    rank: usize,
    world: usize,
}

impl Nccl {
    /// Join the group of `world` ranks as `rank`, on `be`'s GPU and stream: every rank calls
    /// this with the same `id` (from [`unique_id`]), at the same time (it waits for the others).
    ///
    /// # Errors
    /// One line: NCCL missing ([`detect_nccl`]), a rank outside `0..world`, or NCCL's error.
    pub fn new(
        be: &CudaBackend,
        rank: usize,
        world: usize,
        id: &[u8; NCCL_ID_BYTES],
    ) -> Result<Self, CudaError> {
        detect_nccl()?;
        let (Ok(nranks), Ok(r)) = (i32::try_from(world), i32::try_from(rank)) else {
            return Err(failed(format!(
                "NCCL: rank {rank} of {world}: too many ranks"
            )));
        };
        if rank >= world {
            return Err(failed(format!("NCCL: rank {rank} is not in 0..{world}")));
        }
        let (stream, base, len) = be.device().arena_handle();
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| failed(format!("cuCtxSetCurrent: {e:?}")))?;
        let id = nccl_sys::ncclUniqueId {
            internal: id.map(|b| b as c_char),
        };
        let mut comm = MaybeUninit::uninit();
        // SAFETY: `comm` is written by the call before it is read; the backend's context is
        // current, so the communicator is on its GPU.
        let comm = unsafe {
            nccl::comm_init_rank(comm.as_mut_ptr(), nranks, id, r)
                .map_err(|e| nccl_err("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(Nccl {
            comm,
            stream,
            base,
            len,
            rank,
            world,
        })
    }

    fn fail(&self, e: nccl::NcclError) -> CollectiveError {
        CollectiveError::Failed {
            rank: self.rank,
            code: e.0 as i32,
        }
    }

    fn driver_fail(&self) -> CollectiveError {
        CollectiveError::Failed {
            rank: self.rank,
            code: -1,
        }
    }

    /// `op` over a host buffer: copied to a device buffer of its size, reduced (or broadcast
    /// from `root`) there on the stream, copied back.
    fn through_device<T: DeviceRepr>(
        &mut self,
        buf: &mut [T],
        dtype: nccl_sys::ncclDataType_t,
        op: Option<nccl_sys::ncclRedOp_t>,
        root: usize,
    ) -> Result<(), CollectiveError> {
        if buf.is_empty() {
            return Ok(());
        }
        let s = &self.stream;
        s.context()
            .bind_to_thread()
            .map_err(|_| self.driver_fail())?;
        let mut dev = s.clone_htod(&*buf).map_err(|_| self.driver_fail())?;
        {
            let (ptr, _record) = dev.device_ptr_mut(s);
            let p = ptr as *mut std::ffi::c_void;
            // SAFETY: `p` is `buf.len()` elements of `dtype` in a live device buffer, used in
            // place (NCCL allows send == receive), on the communicator's stream.
            let r = unsafe {
                match op {
                    Some(op) => {
                        nccl::all_reduce(p, p, buf.len(), dtype, op, self.comm, s.cu_stream() as _)
                    }
                    None => nccl::broadcast(
                        p,
                        p,
                        buf.len(),
                        dtype,
                        root as i32,
                        self.comm,
                        s.cu_stream() as _,
                    ),
                }
            };
            r.map_err(|e| self.fail(e))?;
        }
        s.memcpy_dtoh(&dev, buf).map_err(|_| self.driver_fail())?;
        s.synchronize().map_err(|_| self.driver_fail())
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        use nccl_sys::{ncclDataType_t::ncclFloat32, ncclRedOp_t::ncclSum};
        self.through_device(buf, ncclFloat32, Some(ncclSum), 0)
    }

    fn all_reduce_stats(&mut self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        use nccl_sys::{ncclDataType_t::ncclFloat64, ncclRedOp_t::ncclSum};
        self.through_device(buf, ncclFloat64, Some(ncclSum), 0)
    }

    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.through_device(buf, nccl_sys::ncclDataType_t::ncclUint8, None, root)
    }

    fn all_reduce_mean_in_arena(&mut self, r: Region) -> Result<bool, CollectiveError> {
        if r.is_empty() {
            return Ok(true);
        }
        let base = self.base.load(Ordering::SeqCst);
        if base == 0 || r.end() > self.len {
            return Err(self.driver_fail());
        }
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|_| self.driver_fail())?;
        let p = (base + 4 * r.offset as u64) as *mut std::ffi::c_void;
        // SAFETY: `p` is `r.len` f32 inside the backend's live allocation (checked above; the
        // backend zeroes `base` before freeing, after waiting for its stream), reduced in place
        // on the backend's stream, so in order with the kernels around it.
        unsafe {
            nccl::all_reduce(
                p,
                p,
                r.len(),
                nccl_sys::ncclDataType_t::ncclFloat32,
                nccl_sys::ncclRedOp_t::ncclAvg,
                self.comm,
                self.stream.cu_stream() as _,
            )
        }
        .map_err(|e| self.fail(e))?;
        Ok(true)
    }
}

impl Drop for Nccl {
    /// Destroys the communicator (its queued operations finish first); errors are ignored: a
    /// drop never panics.
    fn drop(&mut self) {
        // SAFETY: the communicator was made by `new` and is destroyed once.
        let _ = unsafe { nccl::comm_destroy(self.comm) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_refused_in_one_line() {
        // SAFETY: only tries to load the library.
        let present = unsafe { nccl_sys::is_culib_present() };
        match detect_nccl() {
            Ok(()) => assert!(present),
            Err(e) => {
                assert!(!present);
                assert!(e.is_unavailable());
                assert!(!e.message().contains('\n'), "{e}");
                assert!(e.message().contains("libnccl.so"), "{e}");
                // Nothing that loads NCCL runs (cudarc would panic): the id refuses too.
                assert_eq!(unique_id().unwrap_err(), e);
                assert_eq!(nccl_version().unwrap_err(), e);
            }
        }
    }
}
