//! Manta's core worker: what a driver or worker process runs. The [`registry`] of remote
//! functions and actor classes, [`init`] (the embedded cluster in a driver, composed by
//! `manta-node`; the serving loop in a worker process), task submission over Ray's lease
//! protocol with lease reuse, actor clients (ordered calls, incarnations, retries), the owner's
//! object table with distributed reference counting, the executor, and the user API: [`put`],
//! [`get_all`], [`wait`], [`cancel`], [`ObjectRef`], [`ActorHandle`], [`Buffer`],
//! [`pool::ActorPool`]. The daemons it talks to are reached as `ServiceRef`s by protocol.

mod actors;
mod api;
mod buffer;
mod codec;
mod context;
mod core;
mod executor;
mod objects;
mod origin;
pub mod placement;
pub mod pool;
pub mod registry;
pub mod stream;
mod submit;
pub use manta_proto::worker as wire;

pub use crate::core::{
    init, init_with, is_worker_process, Cluster, Config, InitError, StoreStats, ADDRESS_ENV, TOKEN_ENV,
};
pub use actors::{
    create_actor, exit_actor, get_actor, get_actor_in, kill, ActorClass, ActorHandle, ActorOptions,
    RawActorHandle, ACTOR_MANAGER_NAME,
};
pub use api::{
    available_resources, cancel, cancel_force, cancel_with, cluster_resources, free, get_all,
    is_in_object_store, local_object_counts, nodes, object_store_stats, put, wait, CancelOptions, WaitResult,
};
pub use buffer::{Buffer, Element};
pub use codec::CodecError;
pub use context::{get_runtime_context, is_cancelled, RuntimeContext};
pub use error::{ActorError, TaskError};
pub use executor::{Executor, EXECUTOR_NAME};
pub use manta_raylet::{LabelMatch, SchedulingStrategy};
pub use objects::{ObjectRef, RawRef, RefWire};
pub use placement::{
    get_placement_group, list_placement_groups, placement_group, placement_group_with,
    remove_placement_group, Lifetime, PlacementGroup, PlacementGroupOptions, PlacementGroupState,
    PlacementStrategy,
};
pub use stream::ObjectRefGenerator;
pub use submit::{arg, submit, submit_returning, ArgSpec, TaskOptions, LEASE_REQUESTS_MAX, PIPELINE};

mod error;

/// An argument of a remote call: a value, or a ref to the value (resolved before the call runs).
#[derive(Debug)]
pub enum Arg<T> {
    /// The value itself.
    Value(T),
    /// A ref to it.
    Ref(ObjectRef<T>),
}

/// What can be passed where a remote function takes a `T`: a `T`, an `ObjectRef<T>`, or a
/// `&ObjectRef<T>`.
pub trait IntoArg<T> {
    /// Converts into an [`Arg`].
    fn into_arg(self) -> Arg<T>;
}

impl<T> IntoArg<T> for T {
    fn into_arg(self) -> Arg<T> {
        Arg::Value(self)
    }
}

impl<T> IntoArg<T> for ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self)
    }
}

impl<T> IntoArg<T> for &ObjectRef<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Ref(self.clone())
    }
}

/// In a worker process started by a raylet: become the worker (never returns). In any other
/// process: nothing. `#[manta::main]` calls it first, so that a worker never runs `main`.
pub fn enter_worker_if_spawned() {
    if is_worker_process() {
        let _ = init();
    }
}

/// Builder methods of a task's options (expanded inside `f::options()`'s type).
#[doc(hidden)]
#[macro_export]
macro_rules! task_option_methods {
    () => {
        /// CPUs the task needs (default 1).
        pub fn num_cpus(mut self, cpus: f64) -> Self {
            self.options.num_cpus = ::core::option::Option::Some(cpus);
            self
        }

        /// GPUs the task needs (default 0).
        pub fn num_gpus(mut self, gpus: f64) -> Self {
            self.options.num_gpus = ::core::option::Option::Some(gpus);
            self
        }

        /// For a streaming task: how many values may wait, made and not yet taken, before the
        /// task pauses (Ray's `_generator_backpressure_num_objects`; default: no limit).
        pub fn generator_backpressure(mut self, values: u64) -> Self {
            self.options.generator_backpressure = ::core::option::Option::Some(values.max(1));
            self
        }

        /// Custom resources the task needs, by name.
        pub fn resources<N: ::core::convert::Into<::std::string::String>>(
            mut self,
            resources: impl ::core::iter::IntoIterator<Item = (N, f64)>,
        ) -> Self {
            self.options.resources =
                resources.into_iter().map(|(name, amount)| (name.into(), amount)).collect();
            self
        }

        /// Retries if its worker dies (default 3).
        pub fn max_retries(mut self, retries: u32) -> Self {
            self.options.max_retries = ::core::option::Option::Some(retries);
            self
        }

        /// Where the task should run (Ray's `scheduling_strategy`; default: hybrid). A strategy
        /// or a reference to one.
        pub fn scheduling_strategy(
            mut self,
            strategy: impl ::core::convert::Into<$crate::SchedulingStrategy>,
        ) -> Self {
            self.options.scheduling_strategy = strategy.into();
            self
        }

        /// Runs in `group`'s bundle `bundle` (`None`: any of its bundles), on the bundle's
        /// resources only. A bundle index out of range fails the call.
        pub fn placement_group(
            mut self,
            group: &$crate::PlacementGroup,
            bundle: ::core::option::Option<u32>,
        ) -> Self {
            self.options.placement_group =
                ::core::option::Option::Some($crate::placement::InGroup::new(group, bundle));
            self
        }
    };
}

/// Builder methods of an actor's options (expanded inside `Class::options()`'s type).
#[doc(hidden)]
#[macro_export]
macro_rules! actor_option_methods {
    () => {
        /// A name, unique among live actors of its namespace.
        pub fn name(mut self, name: impl ::core::convert::Into<::std::string::String>) -> Self {
            self.options.name = ::core::option::Option::Some(name.into());
            self
        }

        /// The namespace of the name.
        pub fn namespace(mut self, namespace: impl ::core::convert::Into<::std::string::String>) -> Self {
            self.options.namespace = ::core::option::Option::Some(namespace.into());
            self
        }

        /// Whether the actor outlives its handles.
        pub fn detached(mut self, detached: bool) -> Self {
            self.options.detached = detached;
            self
        }

        /// Restarts after its worker dies (-1: unlimited).
        pub fn max_restarts(mut self, restarts: i64) -> Self {
            self.options.max_restarts = restarts;
            self
        }

        /// Retries of a call whose actor died and restarted (-1: unlimited).
        pub fn max_task_retries(mut self, retries: i64) -> Self {
            self.options.max_task_retries = retries;
            self
        }

        /// Calls running at once at most (in the default concurrency group).
        pub fn max_concurrency(mut self, calls: u32) -> Self {
            self.options.max_concurrency = ::core::option::Option::Some(calls);
            self
        }

        /// Named concurrency groups and how many calls each runs at once, in place of the
        /// ones the class declares (Ray's `concurrency_groups`).
        pub fn concurrency_groups<N: ::core::convert::Into<::std::string::String>>(
            mut self,
            groups: impl ::core::iter::IntoIterator<Item = (N, u32)>,
        ) -> Self {
            self.options.concurrency_groups = ::core::option::Option::Some(
                groups.into_iter().map(|(name, size)| (name.into(), size)).collect(),
            );
            self
        }

        /// Get-or-create by name: a handle to the live actor of this name if there is one
        /// (this call's constructor arguments are then ignored), else a new actor.
        pub fn get_if_exists(mut self, get: bool) -> Self {
            self.options.get_if_exists = get;
            self
        }

        /// CPUs held for the actor's life (default 0).
        pub fn num_cpus(mut self, cpus: f64) -> Self {
            self.options.num_cpus = ::core::option::Option::Some(cpus);
            self
        }

        /// GPUs held for the actor's life.
        pub fn num_gpus(mut self, gpus: f64) -> Self {
            self.options.num_gpus = gpus;
            self
        }

        /// Where the actor should run (Ray's `scheduling_strategy`; default: hybrid). A strategy
        /// or a reference to one.
        pub fn scheduling_strategy(
            mut self,
            strategy: impl ::core::convert::Into<$crate::SchedulingStrategy>,
        ) -> Self {
            self.options.scheduling_strategy = strategy.into();
            self
        }

        /// Custom resources held for the actor's life.
        pub fn resources<N: ::core::convert::Into<::std::string::String>>(
            mut self,
            resources: impl ::core::iter::IntoIterator<Item = (N, f64)>,
        ) -> Self {
            self.options.resources =
                resources.into_iter().map(|(name, amount)| (name.into(), amount)).collect();
            self
        }

        /// Lives in `group`'s bundle `bundle` (`None`: any of its bundles), on the bundle's
        /// resources only. A bundle index out of range fails the creation.
        pub fn placement_group(
            mut self,
            group: &$crate::PlacementGroup,
            bundle: ::core::option::Option<u32>,
        ) -> Self {
            self.options.placement_group =
                ::core::option::Option::Some($crate::placement::InGroup::new(group, bundle));
            self
        }
    };
}

/// Entry points for the fuzz targets (`fuzz/`): the decoders of bytes that come from other
/// processes, which must return errors, never panic.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    use crate::{Buffer, ObjectRef};

    /// Decodes `bytes` as an object envelope holding values of several shapes (plain data,
    /// out-of-band buffers, refs): the store's and the owner's bytes as a reader gets them.
    pub fn decode_envelope(bytes: &[u8]) {
        let source = bytes::Bytes::copy_from_slice(bytes);
        let _ = crate::codec::decode::<(i64, String, Vec<u8>)>(source.clone());
        let _ = crate::codec::decode::<Buffer<f32>>(source.clone());
        let _ = crate::codec::decode::<Vec<Buffer<u8>>>(source.clone());
        let _ = crate::codec::decode::<Vec<ObjectRef<i64>>>(source);
    }
}

/// The worker's sans-IO cores: its logic as state machines with no clock, socket or lock,
/// driven by the shells in this crate and by the simulator (`manta-sim`).
pub mod cores {
    pub use crate::actors::state as actor_client;
    pub use crate::objects::state as ownership;
    pub use crate::submit::state as submitter;
}

/// What the generated code needs from the async runtime.
#[doc(hidden)]
pub mod __export {
    pub use tokio::sync::RwLock;
}

/// The cluster's state, from the GCS (Ray's `ray.util.state`).
pub mod state {
    pub use crate::api::{list_actors, list_named_actors, list_workers, NamedActor};
    pub use crate::placement::list_placement_groups;
    pub use manta_gcs::wire::{ActorInfo, ActorState, NodeInfo, NodeState, WorkerInfo};
    pub use manta_proto::placement::PlacementGroupInfo;
    pub use manta_proto::{ActorId, JobId, NodeId, ObjectId, PlacementGroupId};
}
