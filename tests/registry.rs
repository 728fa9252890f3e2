//! The registry of remote functions: what `#[manta::remote]` registers is really in the binary
//! (this test fails if the linker dropped the registrations), runs by name, and is fingerprinted.

use manta::registry;

mod math {
    #[manta::remote]
    pub(crate) fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    #[manta::remote]
    pub(crate) fn greet(name: String, times: u8) -> Vec<String> {
        (0..times).map(|index| format!("{index}: hello {name}")).collect()
    }
}

#[manta::remote]
fn nothing() {}

#[test]
fn remote_functions_are_registered_under_their_path_and_signature() {
    assert_eq!(registry::check(), Ok(registry::names().len()));
    let names = registry::names();
    for name in [math::add::NAME, math::greet::NAME, nothing::NAME] {
        assert!(names.contains(&name), "{name} missing from the registry {names:?}: did the linker drop it?");
    }
    assert!(math::add::NAME.starts_with("registry::math::add#"), "{}", math::add::NAME);
    assert_ne!(math::add::NAME.split('#').nth(1), math::greet::NAME.split('#').nth(1), "signatures differ");
    // The functions stay callable directly.
    assert_eq!(math::add(2, 3), 5);
}

#[test]
fn a_registered_function_runs_by_name_on_encoded_arguments() {
    let add = registry::lookup(math::add::NAME).unwrap();
    let output = (add.invoke)(&registry::encode_arguments(&(40i64, 2i64)).unwrap()).unwrap();
    assert_eq!(rmp_serde::from_slice::<i64>(&output).unwrap(), 42);

    let greet = registry::lookup(math::greet::NAME).unwrap();
    let output = (greet.invoke)(&registry::encode_arguments(&("manta".to_owned(), 2u8)).unwrap()).unwrap();
    assert_eq!(
        rmp_serde::from_slice::<Vec<String>>(&output).unwrap(),
        vec!["0: hello manta", "1: hello manta"]
    );

    // Arguments of the wrong types are a typed error naming the function, not a panic.
    let wrong = (add.invoke)(&registry::encode_arguments(&("forty", 2i64)).unwrap());
    assert!(
        matches!(wrong, Err(registry::InvokeError::Arguments { function, .. }) if function == math::add::NAME)
    );
    assert!(registry::lookup("no::such::function#0").is_none());
}

#[test]
fn the_fingerprint_is_stable_and_names_the_contents() {
    assert_eq!(registry::fingerprint(), registry::fingerprint());
    assert_ne!(registry::fingerprint(), 0xcbf2_9ce4_8422_2325, "the registry is not empty");
}
