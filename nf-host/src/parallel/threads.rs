//! Ranks as threads of one process (the hidden `nf train --virtual-ranks N`): the
//! single-process reference of an N-rank run. Every rank trains in its own thread with its own
//! arena and data shard, exactly as a process under `mpirun` would, and the sums are taken in
//! rank order (rank 0's values, plus rank 1's, ...), so two ranks give the bits MPI gives (a
//! sum of two is the same in either order).
use std::sync::{Arc, Barrier, Mutex};

use nf_core::collective::{Collective, CollectiveError};

use super::World;
use crate::error::CliError;

/// One thread's rank.
pub struct ThreadRank {
    rank: usize,
    world: usize,
    barrier: Arc<Barrier>,
    /// Every rank's deposit of the operation in progress.
    slots: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ThreadRank {
    /// The ranks of a world of `world` threads.
    pub fn group(world: usize) -> Vec<ThreadRank> {
        let barrier = Arc::new(Barrier::new(world));
        let slots = Arc::new(Mutex::new(vec![Vec::new(); world]));
        (0..world)
            .map(|rank| ThreadRank {
                rank,
                world,
                barrier: barrier.clone(),
                slots: slots.clone(),
            })
            .collect()
    }

    /// Deposit `bytes`, then `f` over every rank's deposit (in rank order), then wait until
    /// every rank has read them.
    fn exchange(&mut self, bytes: Vec<u8>, f: impl FnOnce(&[Vec<u8>])) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = bytes;
        self.barrier.wait();
        f(&self.slots.lock().unwrap_or_else(|e| e.into_inner()));
        self.barrier.wait();
    }
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

fn f64s(b: &[u8]) -> impl Iterator<Item = f64> + '_ {
    b.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        f64::from_le_bytes(a)
    })
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let bytes = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.exchange(bytes, |all| {
            for (k, r) in all.iter().enumerate() {
                for (d, v) in buf.iter_mut().zip(f32s(r)) {
                    *d = if k == 0 { v } else { *d + v };
                }
            }
        });
        Ok(())
    }
    fn all_reduce_stats(&mut self, buf: &mut [f64]) -> Result<(), CollectiveError> {
        let bytes = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.exchange(bytes, |all| {
            for (k, r) in all.iter().enumerate() {
                for (d, v) in buf.iter_mut().zip(f64s(r)) {
                    *d = if k == 0 { v } else { *d + v };
                }
            }
        });
        Ok(())
    }
    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<(), CollectiveError> {
        self.exchange(buf.to_vec(), |all| buf.copy_from_slice(&all[root]));
        Ok(())
    }
}

/// Run `rank_main` on a world of `n` threads; the result is rank 0's, or the first error of
/// another rank when rank 0 succeeded. Rank 0 runs on the calling thread (which may hold the
/// stdout lock: `nf` holds it while a command runs); the other ranks print no progress.
pub fn run(
    n: usize,
    rank_main: impl Fn(&mut World) -> Result<(), CliError> + Sync,
) -> Result<(), CliError> {
    let mut ranks = ThreadRank::group(n).into_iter();
    let first = ranks.next().expect("a world has a rank");
    let (mine, others): (Result<(), CliError>, Vec<Result<(), CliError>>) =
        std::thread::scope(|s| {
            let handles: Vec<_> = ranks
                .map(|t| {
                    let f = &rank_main;
                    s.spawn(move || {
                        crate::progress::set_quiet(true);
                        f(&mut World::Threads(t))
                    })
                })
                .collect();
            let mine = rank_main(&mut World::Threads(first));
            let others = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(CliError::Failed("a rank panicked".into())))
                })
                .collect();
            (mine, others)
        });
    let mut first_err = None;
    for r in std::iter::once(mine).chain(others) {
        match r {
            Err(CliError::Quiet(_)) | Ok(()) => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
