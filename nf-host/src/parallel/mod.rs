//! Data-parallel `nf train`: the ranks of a run and the transport between them.
//!
//! A run is a world of one ([`Solo`]: nothing changes), the processes an MPI launcher started
//! (`mpirun -np N nf train ...`, `srun nf train ...`; the `mpi` feature, module `mpi`), or, as the
//! single-process reference of a multi-rank run, threads of one process (the hidden
//! `--virtual-ranks N`, [`threads`]) that sum in rank order. Every rank trains the same plan
//! on its own shard of the data; nf-core's [`nf_core::collective`] does the reductions.
//!
//! Errors: while the run is set up (flags, data, plan) every rank's outcome is compared
//! ([`World::agree`]), and the lowest rank that failed prints its error while the others exit
//! quietly with the same code; once training runs, a rank that fails prints one line naming
//! itself and ends the job ([`World::fail`]: `MPI_Abort` under MPI).
use nf_core::collective::{Collective, CollectiveError, Solo};
use nf_core::region::Region;

use crate::error::CliError;

#[cfg(feature = "mpi")]
pub mod mpi;
pub mod threads;

/// The ranks a run trains with.
pub enum World {
    /// One process.
    Solo(Solo),
    /// Threads of one process standing in for ranks (`--virtual-ranks`).
    Threads(threads::ThreadRank),
    /// The processes of an MPI launcher.
    #[cfg(feature = "mpi")]
    Mpi(mpi::MpiRank),
}

impl World {
    /// The world of this process: MPI's when nf is built with the `mpi` feature (a process
    /// started without a launcher is a world of one), else one process.
    pub fn start() -> Result<World, CliError> {
        #[cfg(feature = "mpi")]
        {
            mpi::MpiRank::start().map(World::Mpi)
        }
        #[cfg(not(feature = "mpi"))]
        {
            Ok(World::Solo(Solo))
        }
    }

    fn inner(&mut self) -> &mut dyn Collective {
        match self {
            World::Solo(s) => s,
            World::Threads(t) => t,
            #[cfg(feature = "mpi")]
            World::Mpi(m) => m,
        }
    }

    /// Bytes of resident memory the transport added to the process when it started (MPI's
    /// libraries and buffers, measured around `MPI_Init`); 0 otherwise.
    pub fn resident_bytes(&self) -> u64 {
        match self {
            #[cfg(feature = "mpi")]
            World::Mpi(m) => m.resident_bytes(),
            _ => 0,
        }
    }

    /// `--ranks N`: refuse a world of another size (one line, exit 2), which is what a binary
    /// started by another MPI's launcher sees (N worlds of one).
    pub fn check_ranks(&self, ranks: Option<u32>) -> Result<(), CliError> {
        let Some(n) = ranks else { return Ok(()) };
        let w = self.world();
        if n as usize == w {
            return Ok(());
        }
        let why = if cfg!(feature = "mpi") || matches!(self, World::Threads(_)) {
            "started by another MPI's launcher, without one, or with another -np?"
        } else {
            "this nf is built without the mpi feature: cargo build --features mpi"
        };
        Err(CliError::Usage(format!(
            "--ranks {n}: this process is one of {w} rank(s) ({why})"
        )))
    }

    /// Every rank's outcome of the same step (the run's setup): `Ok` on every rank when all
    /// succeeded; else the lowest rank that failed returns its error (prefixed by its rank
    /// when that is not rank 0) and every other rank [`CliError::Quiet`] with its exit code.
    pub fn agree<T>(&mut self, r: Result<T, CliError>) -> Result<T, CliError> {
        let world = self.world();
        if world == 1 {
            return r;
        }
        let rank = self.rank();
        let mut codes = vec![0f64; world];
        if let Err(e) = &r {
            codes[rank] = f64::from(e.exit_code());
        }
        if let Err(e) = self.all_reduce_stats(&mut codes) {
            return Err(CliError::Failed(format!("rank {rank}: {e}")));
        }
        let Some(first) = codes.iter().position(|&c| c != 0.0) else {
            return r;
        };
        match r {
            Err(e) if first == rank && rank == 0 => Err(e),
            Err(e) if first == rank => Err(e.with_prefix(&format!("rank {rank}: "))),
            _ => Err(CliError::Quiet(codes[first] as u8)),
        }
    }

    /// The GPU this rank takes (`--device cuda`): its rank among those of its node when nf is
    /// built with the `nccl` feature (one GPU per rank), else the first.
    pub fn gpu_ordinal(&self) -> usize {
        match self {
            #[cfg(feature = "nccl")]
            World::Mpi(m) => m.local_rank(),
            _ => 0,
        }
    }

    /// With the `nccl` feature and more than one MPI rank: join an NCCL group over `be`'s GPU
    /// (rank 0 makes the id, MPI broadcasts it), so that the step's gradients are averaged on
    /// the GPUs, on each backend's stream. A rank without NCCL refuses on every rank, in one
    /// line, before any joins. Otherwise nothing (the reductions go through host memory).
    #[cfg(feature = "nccl")]
    pub fn attach_gpu(&mut self, be: &nf_cuda::CudaBackend) -> Result<(), CliError> {
        let (rank, world) = (self.rank(), self.world());
        if world == 1 || !matches!(self, World::Mpi(_)) {
            return Ok(());
        }
        let made = match rank {
            0 => nf_cuda::nccl::unique_id(),
            _ => nf_cuda::nccl::detect_nccl().map(|()| [0u8; nf_cuda::nccl::NCCL_ID_BYTES]),
        };
        let mut id =
            self.agree(made.map_err(|e| CliError::Usage(format!("--device cuda: NCCL: {e}"))))?;
        self.broadcast(&mut id, 0)
            .map_err(|e| CliError::Failed(format!("NCCL id: {e}")))?;
        let nccl = nf_cuda::nccl::Nccl::new(be, rank, world, &id)
            .map_err(|e| CliError::Failed(format!("--device cuda: NCCL: {e}")))?;
        if let World::Mpi(m) = self {
            m.set_gpu(Some(nccl));
        }
        Ok(())
    }

    /// Stop using NCCL (before the backend goes).
    #[cfg(feature = "nccl")]
    pub fn detach_gpu(&mut self) {
        if let World::Mpi(m) = self {
            m.set_gpu(None);
        }
    }

    /// The end of a rank that failed while training: in a world of one, the error itself;
    /// else one line naming the rank, then the job ends (MPI) or the rank's thread returns.
    pub fn fail(&mut self, e: CliError) -> CliError {
        if self.world() == 1 {
            return e;
        }
        #[cfg(feature = "mpi")]
        if let World::Mpi(m) = self {
            m.abort(&e);
        }
        e.with_prefix(&format!("rank {}: ", self.rank()))
    }
}

impl Collective for World {
    fn rank(&self) -> usize {
        match self {
            World::Solo(s) => s.rank(),
            World::Threads(t) => t.rank(),
            #[cfg(feature = "mpi")]
            World::Mpi(m) => m.rank(),
        }
    }
    fn world(&self) -> usize {
        match self {
            World::Solo(s) => s.world(),
            World::Threads(t) => t.world(),
            #[cfg(feature = "mpi")]
            World::Mpi(m) => m.world(),
        }
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        self.inner().all_reduce_sum(buf)
    }
    fn all_reduce_stats(&mut self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        self.inner().all_reduce_stats(buf)
    }
    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.inner().broadcast(buf, root)
    }
    fn all_reduce_mean_in_arena(&mut self, r: Region) -> Result<bool, CollectiveError> {
        self.inner().all_reduce_mean_in_arena(r)
    }
}

/// A hash of named tensors (names, shapes and the bits of every value), to compare the
/// weights of the ranks.
pub fn weights_hash<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a crate::store::Tensor)>,
) -> u64 {
    // FNV-1a over the bytes, 64-bit.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (name, t) in tensors {
        eat(name.as_bytes());
        for &d in &t.shape {
            eat(&(d as u64).to_le_bytes());
        }
        for v in &t.data {
            eat(&v.to_bits().to_le_bytes());
        }
    }
    h
}
