//! The registry of remote functions and actor classes: what `#[manta::remote]` and
//! `#[manta::actor]` register is really in the binary (this test fails if the linker dropped
//! the registrations), runs by name, and is fingerprinted. A scheduling policy registered here
//! with `manta::register_policy!` is found by name beside the shipped ones.

use manta::registry::{self, decode_value, encode_value, invoke_local};

mod math {
    #[manta::remote]
    pub(crate) fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    #[manta::remote]
    pub(crate) fn greet(name: String, times: u8) -> Vec<String> {
        (0..times).map(|index| format!("{index}: hello {name}")).collect()
    }

    #[manta::remote]
    pub(crate) fn parse(text: String) -> Result<i64, std::num::ParseIntError> {
        text.parse()
    }
}

#[manta::remote]
fn nothing() {}

#[manta::actor]
struct Tally {
    total: u64,
}

#[manta::actor]
impl Tally {
    fn new() -> Self {
        Tally { total: 0 }
    }

    fn add(&mut self, amount: u64) -> u64 {
        self.total += amount;
        self.total
    }
}

#[test]
fn remote_functions_and_actor_classes_are_registered_under_their_paths() {
    // `check` counts functions; `names` lists functions and actor classes (this binary also links
    // the microbenchmark's, from the `manta` library).
    let functions = registry::check().unwrap();
    let names = registry::names();
    assert!(functions >= 4 && names.len() > functions, "{functions} functions in {names:?}");
    for name in [math::add::NAME, math::greet::NAME, math::parse::NAME, nothing::NAME] {
        assert!(names.contains(&name), "{name} missing from the registry {names:?}: did the linker drop it?");
    }
    assert!(math::add::NAME.starts_with("registry::math::add#"), "{}", math::add::NAME);
    assert_ne!(math::add::NAME.split('#').nth(1), math::greet::NAME.split('#').nth(1), "signatures differ");
    let class = <Tally as manta::ActorClass>::NAME;
    assert_eq!(class, "registry::Tally");
    assert!(registry::actor_class(class).is_some(), "the actor class was dropped by the linker");
    assert!(names.contains(&class));
    // The functions stay callable directly.
    assert_eq!(math::add(2, 3), 5);
}

#[test]
fn a_registered_function_runs_by_name_on_encoded_arguments() {
    let add = registry::lookup(math::add::NAME).unwrap();
    let output =
        invoke_local(add, vec![encode_value(&40i64).unwrap(), encode_value(&2i64).unwrap()]).unwrap();
    assert_eq!(decode_value::<i64>(output).unwrap(), 42);

    let greet = registry::lookup(math::greet::NAME).unwrap();
    let output =
        invoke_local(greet, vec![encode_value(&"manta".to_owned()).unwrap(), encode_value(&2u8).unwrap()])
            .unwrap();
    assert_eq!(decode_value::<Vec<String>>(output).unwrap(), vec!["0: hello manta", "1: hello manta"]);

    // Arguments of the wrong types, or too few, are a typed error naming the function.
    let wrong = invoke_local(add, vec![encode_value(&"forty").unwrap(), encode_value(&2i64).unwrap()]);
    assert!(
        matches!(wrong, Err(registry::InvokeError::Arguments { function, .. }) if function == math::add::NAME)
    );
    let missing = invoke_local(add, vec![encode_value(&1i64).unwrap()]);
    assert!(matches!(missing, Err(registry::InvokeError::Arguments { .. })), "{missing:?}");
    assert!(registry::lookup("no::such::function#0").is_none());

    // A function returning Err reports the error's message.
    let parse = registry::lookup(math::parse::NAME).unwrap();
    let failed = invoke_local(parse, vec![encode_value(&"x1".to_owned()).unwrap()]);
    assert_eq!(
        failed,
        Err(registry::InvokeError::Returned { message: "invalid digit found in string".into(), error: None })
    );
    let parsed = invoke_local(parse, vec![encode_value(&"17".to_owned()).unwrap()]).unwrap();
    assert_eq!(decode_value::<i64>(parsed).unwrap(), 17);
}

#[test]
fn a_task_submitted_before_init_fails_with_a_typed_error() {
    // This test binary never calls `manta::init`.
    let sum = math::add::remote(1, 2);
    assert_eq!(sum.get(), Err(manta::TaskError::NotInitialized));
    assert!(!sum.is_ready());
}

#[test]
fn the_fingerprint_is_stable_and_names_the_contents() {
    assert_eq!(registry::fingerprint(), registry::fingerprint());
    assert_ne!(registry::fingerprint(), 0xcbf2_9ce4_8422_2325, "the registry is not empty");
}

/// A user's policy: every default-strategy task on the node with the lowest id that has room.
#[derive(Debug, Default)]
struct LowestId;

impl manta::scheduling::SchedulingPolicy for LowestId {
    fn schedule(
        &mut self,
        request: &manta::scheduling::Request<'_>,
        cluster: &manta::scheduling::ClusterView,
        random: &mut dyn manta::scheduling::RandomSource,
    ) -> manta::scheduling::Decision {
        let lowest = cluster
            .nodes()
            .filter(|node| node.alive && node.resources.available.contains(request.demand))
            .min_by_key(|node| node.id);
        match (request.strategy, lowest) {
            (manta::scheduling::SchedulingStrategy::Hybrid, Some(node)) => {
                manta::scheduling::Decision::Scheduled(node.id)
            }
            _ => manta::scheduling::DefaultPolicy::default().schedule(request, cluster, random),
        }
    }
}

manta::register_policy!("lowest-id", "the node with the lowest id that has room", || Box::new(LowestId));

#[test]
fn a_policy_registered_in_the_user_s_crate_is_found_by_name() {
    assert!(manta::scheduling::policy_names().contains(&"lowest-id"));
    let mut policy = manta::scheduling::policy_named("lowest-id").unwrap();
    let cpu = manta::scheduling::ResourceSet::new().with("CPU", manta::scheduling::Quantity::units(1));
    let node = |n: u8| manta::scheduling::NodeView {
        id: manta::state::NodeId([n; 16]),
        resources: manta::scheduling::NodeResources::idle(cpu.clone()),
        alive: true,
        labels: Vec::new(),
    };
    let cluster = manta::scheduling::ClusterView::new(manta::state::NodeId([3; 16]), vec![node(3), node(2)]);
    let strategy = manta::scheduling::SchedulingStrategy::Hybrid;
    let decision = policy.schedule(
        &manta::scheduling::Request::new(&cpu, &strategy),
        &cluster,
        &mut manta::scheduling::SplitMix64(1),
    );
    assert_eq!(decision, manta::scheduling::Decision::Scheduled(manta::state::NodeId([2; 16])));
    // An embedded cluster refuses a name nobody registered, naming those there are.
    let config = manta::Config { scheduler: "fastest".into(), ..manta::Config::default() };
    let error = manta::init_with(config).expect_err("an unknown policy is refused");
    assert!(error.to_string().contains("lowest-id"), "{error}");
}
