//! The synchronisation primitives this crate uses, swapped for loom's under `--cfg manta_loom`
//! so the loom models explore every interleaving of the real code (after tokio's `src/loom`).
//! The cfg is not plain `loom`: that would also switch tokio to its internal loom build, which
//! does not compile outside tokio's own tests.

#[cfg(not(manta_loom))]
pub(crate) use parking_lot::Mutex;

#[cfg(manta_loom)]
pub(crate) use self::loom_mutex::Mutex;

#[cfg(manta_loom)]
mod loom_mutex {
    /// parking_lot's interface (no poisoning) over loom's mutex.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            // Loom's mutex poisons only when a model thread panicked, which fails the model anyway.
            self.0.lock().expect("loom mutex poisoned")
        }
    }
}
