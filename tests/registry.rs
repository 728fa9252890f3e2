//! The registry of remote functions and actor classes: what `#[manta::remote]` and
//! `#[manta::actor]` register is really in the binary (this test fails if the linker dropped
//! the registrations), runs by name, and is fingerprinted.

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
