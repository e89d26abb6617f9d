//! The processes of an MPI launcher (`mpirun`, `mpiexec`, `srun`) as the ranks of a run,
//! through rsmpi (the `mpi` crate) over the system's MPI.
//!
//! MPI is initialised with `MPI_THREAD_FUNNELED` (the kernels' worker threads never call MPI)
//! and its resident memory is measured around `MPI_Init`. MPI's default error handler is
//! kept: an error inside MPI ends the job. A rank that fails in nf prints one line naming
//! itself and calls `MPI_Abort`, which makes the launcher end every rank; a rank killed
//! outright is noticed by the launcher, which ends the others.
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;
use nf_core::collective::{Collective, CollectiveError};
use nf_core::region::Region;

use crate::error::CliError;

/// This process's rank in `MPI_COMM_WORLD`.
pub struct MpiRank {
    /// Finalises MPI when dropped.
    _universe: Universe,
    comm: SimpleCommunicator,
    rank: usize,
    world: usize,
    /// Resident bytes added by `MPI_Init`.
    resident: u64,
    /// The all-reduce's receive buffer (MPI has no in-place all-reduce in rsmpi), grown to
    /// the largest region once and kept.
    recv: Vec<f32>,
    /// This process's rank among those of its node (`MPI_COMM_TYPE_SHARED`): the GPU it takes.
    #[cfg(feature = "nccl")]
    local_rank: usize,
    /// NCCL over the GPU's arena, once attached: the step's gradients are averaged there.
    #[cfg(feature = "nccl")]
    gpu: Option<nf_cuda::nccl::Nccl>,
}

/// The process's resident set now (`VmRSS`), where the platform reports it.
fn rss_now() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

impl MpiRank {
    /// Initialise MPI (a process started without a launcher is a world of one).
    pub fn start() -> Result<MpiRank, CliError> {
        let before = rss_now();
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| CliError::Failed("MPI was already initialised".into()))?;
        let resident = rss_now().saturating_sub(before);
        let comm = universe.world();
        let (rank, world) = (comm.rank() as usize, comm.size() as usize);
        #[cfg(feature = "nccl")]
        let local_rank = comm.split_shared(rank as i32).rank() as usize;
        Ok(MpiRank {
            _universe: universe,
            comm,
            rank,
            world,
            resident,
            recv: Vec::new(),
            #[cfg(feature = "nccl")]
            local_rank,
            #[cfg(feature = "nccl")]
            gpu: None,
        })
    }

    /// This process's rank among those of its node: the GPU it takes.
    #[cfg(feature = "nccl")]
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Average the step's gradients with `nccl` from now on (`None`: through MPI again).
    #[cfg(feature = "nccl")]
    pub fn set_gpu(&mut self, nccl: Option<nf_cuda::nccl::Nccl>) {
        self.gpu = nccl;
    }

    /// Resident bytes `MPI_Init` added.
    pub fn resident_bytes(&self) -> u64 {
        self.resident
    }

    /// Print `error: rank R: ...` and end the job with the error's exit code.
    pub fn abort(&self, e: &CliError) -> ! {
        // A rank that only follows another's error (agreed before) has nothing to say.
        if !matches!(e, CliError::Quiet(_)) {
            crate::error::print_error_line(format_args!("error: rank {}: {e}", self.rank));
        }
        self.comm.abort(i32::from(e.exit_code()))
    }
}

impl Collective for MpiRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        if self.recv.len() < buf.len() {
            self.recv.resize(buf.len(), 0.0);
        }
        let recv = &mut self.recv[..buf.len()];
        self.comm
            .all_reduce_into(&buf[..], &mut recv[..], SystemOperation::sum());
        buf.copy_from_slice(recv);
        Ok(())
    }
    fn all_reduce_stats(&mut self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        let send = buf.to_vec();
        self.comm
            .all_reduce_into(&send[..], &mut buf[..], SystemOperation::sum());
        Ok(())
    }
    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.comm
            .process_at_rank(root as i32)
            .broadcast_into(&mut buf[..]);
        Ok(())
    }
    fn all_reduce_mean_in_arena(&mut self, r: Region) -> Result<bool, CollectiveError> {
        #[cfg(feature = "nccl")]
        if let Some(g) = &mut self.gpu {
            return g.all_reduce_mean_in_arena(r);
        }
        let _ = r;
        Ok(false)
    }
}
