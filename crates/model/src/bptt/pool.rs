//! Buffers reused from minibatch to minibatch. Each worker thread keeps the buffers its
//! last share of a minibatch used, so training asks the allocator for memory once, not
//! for every minibatch: fresh memory costs page faults and the kernel zeroing each page
//! (8-11% of a PTB run's time in the profile before the pool), and a buffer freed to the
//! operating system comes back as fresh memory. A thread keeps its buffers for its
//! life (rayon's workers: the process's), at most one minibatch's worth.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

use super::Real;

#[derive(Default)]
pub struct Pool<T> {
    free: Vec<Vec<T>>,
}

impl<T: Real> Pool<T> {
    /// `len` zeros.
    pub fn zeros(&mut self, len: usize) -> Vec<T> {
        let mut v = self.any(len);
        v.fill(T::ZERO);
        v
    }

    /// `len` elements of unspecified value, for a caller that writes every one first.
    pub fn any(&mut self, len: usize) -> Vec<T> {
        // A free buffer that holds `len` but not more than twice it, one whose elements
        // are all written already first (growing a buffer fills the new part), then the
        // smallest; a run asks for the same sizes in the same order every minibatch, so
        // it is usually the one given back for it. Without the bound, a request took a
        // `[rows, V]` block whenever no buffer of its own size was free, and the block's
        // next user grew it back: 13 MB filled twice a PTB minibatch.
        let best = (self.free.iter().enumerate())
            .filter(|(_, v)| (len..=2 * len).contains(&v.capacity()))
            .min_by_key(|(_, v)| (v.len() < len, v.capacity()))
            .map(|(i, _)| i);
        let mut v = best.map_or_else(Vec::new, |i| self.free.swap_remove(i));
        v.resize(len, T::ZERO);
        v
    }

    /// A copy of `from` in a pooled buffer.
    pub fn copy(&mut self, from: &[T]) -> Vec<T> {
        let mut v = self.any(from.len());
        v.copy_from_slice(from);
        v
    }

    pub fn give(&mut self, v: Vec<T>) {
        if v.capacity() > 0 {
            self.free.push(v);
        }
    }
}

/// A thread's two pools: one for the buffers of a worker's share of a minibatch, one for
/// the gradient buffers the calling thread hands to the workers. Apart, because a thread
/// can be both (rayon runs a share on the calling thread) and the two would take each
/// other's buffers as best fits (the `[V, H]` decoder gradient would take the `[rows, V]`
/// softmax buffer, which would then be allocated afresh every minibatch).
#[derive(Clone, Copy)]
pub enum Kind {
    Work,
    Grads,
}

/// The calling thread's `kind` pool for `T`, handed to `f` (a pool already in use further
/// up this thread's stack leaves `f` an empty one).
pub fn with_pool<T: Real, R>(kind: Kind, f: impl FnOnce(&mut Pool<T>) -> R) -> R {
    let key = T::pool(kind);
    let mut pool = key.with(|p| p.take());
    let result = f(&mut pool);
    key.with(|p| p.replace(pool));
    result
}

/// Where `Real` types keep their per-thread pools.
pub type PoolKey<T> = &'static LocalKey<RefCell<Pool<T>>>;

/// How the program's allocator hands freed memory back to the operating system at once;
/// set by the program that chose the allocator (`set_give_back`).
static GIVE_BACK: OnceLock<fn()> = OnceLock::new();

/// Tells `release` how to hand freed memory back to the operating system on each thread
/// (mimalloc: `mi_collect(true)`). An allocator that keeps freed memory for a while
/// (mimalloc's purge delay, which training needs for speed) otherwise holds the released
/// pools beside what comes next: the model built at an epoch's end and the next epoch's
/// pools, laid out differently, took 10-30 MiB more at their peak than either alone.
/// The first call wins.
pub fn set_give_back(give_back: fn()) {
    let _ = GIVE_BACK.set(give_back);
}

/// Every buffer the pools of this thread and of rayon's workers keep, freed, and the
/// allocator's free memory handed back: for the end of a run of training, so that what
/// comes next (the model, an evaluation's tensors) reuses the memory instead of taking
/// more, and for its start (what building the run left behind).
pub fn release() {
    fn clear<T: Real>() {
        for kind in [Kind::Work, Kind::Grads] {
            T::pool(kind).with(|p| p.take());
        }
    }
    let here = || {
        clear::<f32>();
        clear::<f64>();
        if let Some(give_back) = GIVE_BACK.get() {
            give_back();
        }
    };
    rayon::broadcast(|_| here());
    here();
}

/// `step()` run on one of rayon's workers, the calling thread waiting: a training step's
/// sequential parts and its parallel ones on the same threads, so that they share one
/// thread's pools and one core's cache. Called from the main thread, a step took turns
/// with rayon's workers (one thread: the main thread and the one worker, which the
/// scheduler put on either core): PTB on one thread, not pinned, 8.4-8.7k tokens/s, and
/// 9.0-9.3k with the whole process pinned to one core.
pub fn on_workers<R: Send>(step: impl FnOnce() -> R + Send) -> R {
    // `scope` runs its closure on a worker of the global pool (the caller blocks),
    // where the step's `par_iter`s then take their share too.
    rayon::scope(|_| step())
}
