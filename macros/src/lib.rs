//! Manta's attribute macros.
//!
//! - `#[manta::remote]` registers a function in the binary's registry of remote functions,
//!   under its module path plus a hash of its signature, and adds `f::remote(args)` and
//!   `f::options()...remote(args)`.
//! - `#[manta::actor]` on an `impl` block registers an actor class: `Type::remote(ctor args)`,
//!   `Type::options()...remote(ctor args)`, and a method on the handle per method with `self`.
//!   On the struct it checks the type can be an actor (`Send + Sync + 'static`).
//! - `#[manta::main]` makes a worker process that re-executes this binary serve instead of
//!   running `main`.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_macro_input, FnArg, ImplItem, Item, ItemFn, ItemImpl, Pat, ReturnType, Type};

/// Registers a function so that worker processes of this binary can run it.
///
/// ```ignore
/// #[manta::remote]
/// fn add(a: i64, b: i64) -> i64 { a + b }
/// let sum: manta::ObjectRef<i64> = add::remote(1, 2);          // runs in a worker process
/// let big = add::options().num_cpus(2.0).max_retries(0).remote(&sum, 3);  // a ref as argument
/// ```
/// Each argument can be given as a value, an `ObjectRef` of its type, or a reference to one
/// (resolved to its value before the task runs). A function returning `Result<T, E>` (with
/// `E: Display`) gives an `ObjectRef<T>`; an `Err` becomes the task's error, with its message,
/// and, when `E` also implements `Serialize`, with its value: the caller reads it back with
/// `TaskError::user_error::<E>()`.
/// The function stays callable as before; the macro adds a module of the same name holding
/// `NAME`, `remote`, `options` and the registration.
///
/// With `#[manta::remote(num_returns = N)]`, the function returns a tuple of `N` values (or a
/// `Result` of one) and `remote` gives one ref per value, each an object of its own (Ray's
/// `num_returns`): the values can be got, passed on and dropped apart. An `Err` fails them all.
///
/// ```ignore
/// #[manta::remote(num_returns = 2)]
/// fn split(text: String) -> (String, usize) { let n = text.len(); (text, n) }
/// let (text, len): (ObjectRef<String>, ObjectRef<usize>) = split::remote("manta".to_owned());
/// ```
#[proc_macro_attribute]
pub fn remote(attribute: TokenStream, item: TokenStream) -> TokenStream {
    let attribute = proc_macro2::TokenStream::from(attribute);
    if syn::parse2::<syn::Ident>(attribute.clone()).is_ok_and(|ident| ident == "streaming") {
        let function = parse_macro_input!(item as ItemFn);
        return match expand_streaming(&function) {
            Ok(tokens) => tokens.into(),
            Err(error) => error.to_compile_error().into(),
        };
    }
    let returns = match remote_arguments(attribute) {
        Ok(returns) => returns,
        Err(error) => return error.to_compile_error().into(),
    };
    let function = parse_macro_input!(item as ItemFn);
    match expand_remote(&function, returns) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// The arguments of `#[manta::remote(...)]`: `num_returns = N` (a literal, at least 1).
fn remote_arguments(attribute: proc_macro2::TokenStream) -> syn::Result<Option<usize>> {
    if attribute.is_empty() {
        return Ok(None);
    }
    let argument: syn::MetaNameValue = syn::parse2(attribute)?;
    if !argument.path.is_ident("num_returns") {
        return Err(syn::Error::new_spanned(
            &argument.path,
            "#[manta::remote] takes `num_returns = N` or `streaming`",
        ));
    }
    let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(count), .. }) = &argument.value else {
        return Err(syn::Error::new_spanned(&argument.value, "num_returns is a whole number, at least 1"));
    };
    match count.base10_parse::<usize>()? {
        0 => Err(syn::Error::new_spanned(
            count,
            "num_returns is at least 1 (a function with nothing to return returns `()`)",
        )),
        count => Ok(Some(count)),
    }
}

/// The item type of `impl Iterator<Item = T>`, `impl IntoIterator<Item = T>` or
/// `Box<dyn Iterator<Item = T> ...>`.
fn iterator_item(ty: &Type) -> Option<Type> {
    let bounds = match ty {
        Type::ImplTrait(implemented) => &implemented.bounds,
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            if last.ident != "Box" {
                return None;
            }
            let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else { return None };
            let Some(syn::GenericArgument::Type(Type::TraitObject(object))) = arguments.args.first() else {
                return None;
            };
            &object.bounds
        }
        Type::Paren(inner) => return iterator_item(&inner.elem),
        _ => return None,
    };
    bounds.iter().find_map(|bound| {
        let syn::TypeParamBound::Trait(bound) = bound else { return None };
        let last = bound.path.segments.last()?;
        if last.ident != "Iterator" && last.ident != "IntoIterator" {
            return None;
        }
        let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else { return None };
        arguments.args.iter().find_map(|argument| match argument {
            syn::GenericArgument::AssocType(item) if item.ident == "Item" => Some(item.ty.clone()),
            _ => None,
        })
    })
}

/// `#[manta::remote(streaming)]`: the function returns an iterator; `remote` gives an
/// `ObjectRefGenerator` of its items (an item `Result<T, E>` gives refs to `T`, and an `Err`
/// ends the stream with that error).
fn expand_streaming(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    if signature.asyncness.is_some() || !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            signature,
            "#[manta::remote] functions are neither async nor generic",
        ));
    }
    let not_an_iterator = || {
        syn::Error::new_spanned(
            &signature.output,
            "a streaming function returns `impl Iterator<Item = T>` (or `impl IntoIterator`, or a boxed `dyn Iterator`)",
        )
    };
    let ReturnType::Type(_, returned) = &signature.output else { return Err(not_an_iterator()) };
    let item = iterator_item(returned).ok_or_else(not_an_iterator)?;
    let (value, to_result) = match result_ok_type(&item) {
        Some(ok) => (
            ok,
            quote! {
                |item| item.map_err(|error| {
                    #[allow(unused_imports)]
                    use ::manta::__private::{ReturnedText as _, ReturnedValue as _};
                    (&::manta::__private::Returned(error)).invoke_error()
                })
            },
        ),
        None => (item.clone(), quote!(::core::result::Result::Ok::<_, ::manta::__private::InvokeError>)),
    };
    let parameters = parameters(signature.inputs.iter())?;
    let names: Vec<_> = parameters.iter().map(|parameter| &parameter.name).collect();
    let types: Vec<_> = parameters.iter().map(|parameter| &parameter.ty).collect();
    let shape = quote!(fn(#(#types),*) -> stream of #item).to_string();
    let refs_type = quote!(::manta::ObjectRefGenerator<#value>);
    let submit = quote! {
        ::manta::ObjectRefGenerator::__from_raw(::manta::__private::submit_streaming(
            NAME,
            ::std::vec![#(::manta::__private::arg::<#types, _>(#names)),*],
            &self.options,
        ))
    };
    let encode = quote! {
        ::manta::__private::stream(NAME, ::core::iter::IntoIterator::into_iter(output).map(#to_result))
    };
    Ok(function_module(function, &parameters, &shape, (refs_type, submit, encode)))
}

/// The types of a tuple of `count` elements; an error naming the mismatch otherwise.
fn tuple_elements(ty: &Type, count: usize) -> syn::Result<Vec<Type>> {
    match ty {
        Type::Tuple(tuple) if tuple.elems.len() == count => Ok(tuple.elems.iter().cloned().collect()),
        Type::Paren(inner) => tuple_elements(&inner.elem, count),
        other => Err(syn::Error::new_spanned(
            other,
            format!("with num_returns = {count}, the function returns a tuple of {count} values (or a Result of one)"),
        )),
    }
}

/// Declares an actor class. Put it on the struct and on one `impl` block holding a
/// constructor `fn new(...) -> Self` (or `-> Result<Self, E>`) and the methods callers can call.
///
/// ```ignore
/// #[manta::actor]
/// struct Counter { n: i64 }
///
/// #[manta::actor]
/// impl Counter {
///     fn new(start: i64) -> Self { Counter { n: start } }
///     fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
///     async fn read(&self) -> i64 { self.n }
/// }
///
/// let counter = Counter::options().name("c").max_restarts(1).remote(0)?;  // ActorHandle<Counter>
/// assert_eq!(counter.incr(5).get()?, 5);
/// ```
/// `&mut self` methods run one at a time; `&self` methods (and `async` ones) may run
/// concurrently, up to `max_concurrency`. Calls from one caller start in submission order.
/// A method marked `#[manta(num_returns = N)]` returns a tuple of `N` values (or a `Result` of
/// one), and its handle method one ref per value, as `#[manta::remote(num_returns = N)]`.
#[proc_macro_attribute]
pub fn actor(attribute: TokenStream, item: TokenStream) -> TokenStream {
    let item = parse_macro_input!(item as Item);
    let attribute = proc_macro2::TokenStream::from(attribute);
    if !attribute.is_empty() && !matches!(item, Item::Impl(_)) {
        let error = syn::Error::new_spanned(attribute, "arguments of #[manta::actor] go on the impl block");
        return error.to_compile_error().into();
    }
    let expanded = match &item {
        Item::Struct(structure) => {
            if !structure.generics.params.is_empty() {
                Err(syn::Error::new_spanned(&structure.generics, "actor classes are not generic"))
            } else {
                let name = &structure.ident;
                Ok(quote! {
                    #structure
                    const _: fn() = || {
                        fn actor_state_is_send_sync_static<T: ::core::marker::Send + ::core::marker::Sync + 'static>() {}
                        actor_state_is_send_sync_static::<#name>();
                    };
                })
            }
        }
        Item::Impl(block) => {
            concurrency_groups(attribute).and_then(|groups| expand_actor_impl(block, &groups))
        }
        other => Err(syn::Error::new_spanned(other, "#[manta::actor] goes on a struct and its impl block")),
    };
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// Wraps `main` so that a worker process re-executing this binary serves tasks instead of
/// running it (the embedded cluster's workers are this same binary).
#[proc_macro_attribute]
pub fn main(attribute: TokenStream, item: TokenStream) -> TokenStream {
    if !attribute.is_empty() {
        let error = syn::Error::new(proc_macro2::Span::call_site(), "#[manta::main] takes no arguments");
        return error.to_compile_error().into();
    }
    let mut function = parse_macro_input!(item as ItemFn);
    let body = &function.block;
    *function.block = syn::parse_quote!({
        ::manta::enter_worker_if_spawned();
        #body
    });
    quote!(#function).into()
}

/// A parameter: its name (for generated code) and type.
struct Parameter {
    name: proc_macro2::Ident,
    ty: Type,
}

fn parameters<'a>(inputs: impl Iterator<Item = &'a FnArg>) -> syn::Result<Vec<Parameter>> {
    let mut parameters = Vec::new();
    for (index, input) in inputs.enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new_spanned(input, "unexpected `self`"));
        };
        if !matches!(&*typed.pat, Pat::Ident(_) | Pat::Wild(_)) {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "name each argument of a remote function or method",
            ));
        }
        parameters.push(Parameter { name: format_ident!("argument_{index}"), ty: (*typed.ty).clone() });
    }
    Ok(parameters)
}

/// For `Result<T, E>` (or a one-argument `Result<T>` alias), `Some(T)`.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(arguments) = &last.arguments else { return None };
    match arguments.args.first()? {
        syn::GenericArgument::Type(ok) => Some(ok.clone()),
        _ => None,
    }
}

/// The output type seen by callers and the tokens that encode `output` for `name`.
fn output_handling(
    output: &ReturnType,
    name: &proc_macro2::TokenStream,
) -> (proc_macro2::TokenStream, proc_macro2::TokenStream) {
    match output {
        ReturnType::Default => (quote!(()), quote!(::manta::__private::output(#name, &output))),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            // `(&Returned(error)).invoke_error()`: the error travels as a value when its type
            // serialises, else as its text (autoref specialisation, decided here where the
            // error's type is concrete).
            Some(ok) => (
                quote!(#ok),
                quote! {
                    match output {
                        ::core::result::Result::Ok(value) => ::manta::__private::output(#name, &value),
                        ::core::result::Result::Err(error) => {
                            #[allow(unused_imports)]
                            use ::manta::__private::{ReturnedText as _, ReturnedValue as _};
                            ::core::result::Result::Err((&::manta::__private::Returned(error)).invoke_error())
                        }
                    }
                },
            ),
            None => (quote!(#ty), quote!(::manta::__private::output(#name, &output))),
        },
    }
}

/// For a function or method with `count` returns (a tuple, or a `Result` of one): the
/// elements' types and the tokens that encode `output`, value by value, for `name`.
fn several_outputs(
    output: &ReturnType,
    name: &proc_macro2::TokenStream,
    count: usize,
) -> syn::Result<(Vec<Type>, proc_macro2::TokenStream)> {
    let (ok, _) = output_handling(output, name);
    let elements = tuple_elements(&syn::parse2(ok)?, count)?;
    let indices = (0..count).map(syn::Index::from);
    let returns_result = matches!(output, ReturnType::Type(_, ty) if result_ok_type(ty).is_some());
    let parts = quote! {
        ::manta::__private::outputs(#name, ::std::vec![#(::manta::__private::output(#name, &value.#indices)?),*])
    };
    let encode = if returns_result {
        quote! {
            match output {
                ::core::result::Result::Ok(value) => #parts,
                ::core::result::Result::Err(error) => {
                    #[allow(unused_imports)]
                    use ::manta::__private::{ReturnedText as _, ReturnedValue as _};
                    ::core::result::Result::Err((&::manta::__private::Returned(error)).invoke_error())
                }
            }
        }
    } else {
        quote! { let value = output; #parts }
    };
    Ok((elements, encode))
}

fn expand_remote(function: &ItemFn, returns: Option<usize>) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    if signature.asyncness.is_some() || !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            signature,
            "#[manta::remote] functions are neither async nor generic",
        ));
    }
    let parameters = parameters(signature.inputs.iter())?;
    let names: Vec<_> = parameters.iter().map(|parameter| &parameter.name).collect();
    let types: Vec<_> = parameters.iter().map(|parameter| &parameter.ty).collect();
    let (output, encode) = output_handling(&signature.output, &quote!(NAME));
    let declared_output = match &signature.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    // Several returns: one ref per element of the returned tuple, each value encoded apart.
    let (refs_type, submit, encode) = match returns {
        None | Some(1) => (
            quote!(::manta::ObjectRef<#output>),
            quote! {
                ::manta::ObjectRef::__from_raw(::manta::__private::submit(
                    NAME,
                    ::std::vec![#(::manta::__private::arg::<#types, _>(#names)),*],
                    &self.options,
                ))
            },
            encode,
        ),
        Some(count) => {
            let (elements, encode) = several_outputs(&signature.output, &quote!(NAME), count)?;
            let raw: Vec<_> = (0..count).map(|index| format_ident!("return_{index}")).collect();
            (
                quote!((#(::manta::ObjectRef<#elements>),*)),
                quote! {{
                    let [#(#raw),*] = ::manta::__private::submit_returning::<#count>(
                        NAME,
                        ::std::vec![#(::manta::__private::arg::<#types, _>(#names)),*],
                        &self.options,
                    );
                    (#(::manta::ObjectRef::__from_raw(#raw)),*)
                }},
                encode,
            )
        }
    };
    // The hash names this exact signature: a binary whose function changed shape is a different
    // function to the registry, so mismatched workers are caught by the registry fingerprint.
    let mut shape = quote!(fn(#(#types),*) -> #declared_output).to_string();
    if let Some(count @ 2..) = returns {
        shape += &format!(" returns {count}");
    }
    Ok(function_module(function, &parameters, &shape, (refs_type, submit, encode)))
}

/// The module `#[manta::remote]` adds beside `function`: `NAME` (its module path and a hash of
/// `shape`), `remote`, `options` and the registration of `invoke`, which decodes the arguments,
/// calls the function into `output`, and runs `encode`.
fn function_module(
    function: &ItemFn,
    parameters: &[Parameter],
    shape: &str,
    (refs_type, submit, encode): (
        proc_macro2::TokenStream,
        proc_macro2::TokenStream,
        proc_macro2::TokenStream,
    ),
) -> proc_macro2::TokenStream {
    let name = &function.sig.ident;
    let names: Vec<_> = parameters.iter().map(|parameter| &parameter.name).collect();
    let types: Vec<_> = parameters.iter().map(|parameter| &parameter.ty).collect();
    let hash = format!("{:016x}", fnv1a(shape.as_bytes()));
    let visibility = &function.vis;
    quote! {
        #function

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, clippy::too_many_arguments)]
        #visibility mod #name {
            #[allow(unused_imports)]
            use super::*;

            /// The name this function is registered under.
            pub const NAME: &str = concat!(module_path!(), "#", #hash);

            /// Runs the function as a task in a worker process; returns at once.
            pub fn remote(#(#names: impl ::manta::IntoArg<#types>),*) -> #refs_type {
                options().remote(#(#names),*)
            }

            /// Per-call options: resources, retries (and a stream's backpressure).
            pub fn options() -> Options {
                Options { options: ::core::default::Default::default() }
            }

            /// Options of one call; finish with `remote(args)`.
            #[derive(Debug, Clone)]
            pub struct Options {
                options: ::manta::TaskOptions,
            }

            impl Options {
                ::manta::__private::task_option_methods!();

                /// Runs the function with these options; returns at once.
                pub fn remote(self, #(#names: impl ::manta::IntoArg<#types>),*) -> #refs_type {
                    #submit
                }
            }

            fn invoke(
                invocation: &mut ::manta::__private::Invocation,
            ) -> ::core::result::Result<::manta::__private::Output, ::manta::__private::InvokeError> {
                #(let #names: #types = invocation.arg()?;)*
                let output = super::#name(#(#names),*);
                #encode
            }

            ::manta::__private::inventory::submit! {
                ::manta::__private::RemoteFunction { name: NAME, invoke }
            }
        }
    }
}

/// The arguments of `#[manta::actor(...)]` on an impl block: `concurrency_groups(name = N, ...)`.
fn concurrency_groups(attribute: proc_macro2::TokenStream) -> syn::Result<Vec<(String, u32)>> {
    if attribute.is_empty() {
        return Ok(Vec::new());
    }
    let list: syn::MetaList = syn::parse2(attribute)?;
    if !list.path.is_ident("concurrency_groups") {
        return Err(syn::Error::new_spanned(
            &list.path,
            "#[manta::actor] takes only `concurrency_groups(name = N, ...)`",
        ));
    }
    let groups = list.parse_args_with(
        syn::punctuated::Punctuated::<syn::MetaNameValue, syn::Token![,]>::parse_terminated,
    )?;
    let mut parsed: Vec<(String, u32)> = Vec::new();
    for group in groups {
        let name = group.path.require_ident()?.to_string();
        let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(size), .. }) = &group.value else {
            return Err(syn::Error::new_spanned(
                &group.value,
                "a concurrency group's size is a whole number, at least 1",
            ));
        };
        let size = size.base10_parse::<u32>()?;
        if size == 0 {
            return Err(syn::Error::new_spanned(
                &group.value,
                "a concurrency group runs at least 1 call at once",
            ));
        }
        if parsed.iter().any(|(known, _)| *known == name) {
            return Err(syn::Error::new_spanned(&group.path, "this concurrency group is declared twice"));
        }
        parsed.push((name, size));
    }
    Ok(parsed)
}

/// What `#[manta(...)]` on an actor method says: `num_returns = N`, `concurrency_group = "name"`.
#[derive(Default)]
struct MethodOptions {
    returns: Option<usize>,
    group: Option<String>,
}

fn method_options(attribute: &syn::Attribute) -> syn::Result<MethodOptions> {
    let arguments = attribute.meta.require_list()?.parse_args_with(
        syn::punctuated::Punctuated::<syn::MetaNameValue, syn::Token![,]>::parse_terminated,
    )?;
    let mut options = MethodOptions::default();
    for argument in arguments {
        if argument.path.is_ident("concurrency_group") {
            let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(group), .. }) = &argument.value else {
                return Err(syn::Error::new_spanned(
                    &argument.value,
                    "a concurrency group is named by a string",
                ));
            };
            options.group = Some(group.value());
        } else if argument.path.is_ident("num_returns") {
            options.returns = remote_arguments(quote!(#argument))?;
        } else {
            return Err(syn::Error::new_spanned(
                &argument.path,
                "#[manta(...)] on a method takes `num_returns = N` and `concurrency_group = \"name\"`",
            ));
        }
    }
    Ok(options)
}

fn expand_actor_impl(block: &ItemImpl, groups: &[(String, u32)]) -> syn::Result<proc_macro2::TokenStream> {
    if block.trait_.is_some() || !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            block,
            "#[manta::actor] goes on the type's own, non-generic impl block",
        ));
    }
    let Type::Path(self_path) = &*block.self_ty else {
        return Err(syn::Error::new_spanned(&block.self_ty, "an actor class is a named struct"));
    };
    let class = &self_path.path.segments.last().expect("a path has a segment").ident;
    let methods_type = format_ident!("__Manta{}Methods", class);
    let options_type = format_ident!("__Manta{}Options", class);
    let registration = format_ident!("__manta_actor_{}", class);
    let class_name = class.to_string();

    // `#[manta(...)]` on a method: read here, and left out of the emitted block.
    let mut block = block.clone();
    let mut method_returns = std::collections::HashMap::new();
    let mut method_groups = Vec::new();
    for item in &mut block.items {
        let ImplItem::Fn(method) = item else { continue };
        let mut kept = Vec::new();
        for attribute in std::mem::take(&mut method.attrs) {
            if !attribute.path().is_ident("manta") {
                kept.push(attribute);
                continue;
            }
            if method.sig.ident == "new" {
                return Err(syn::Error::new_spanned(
                    attribute,
                    "#[manta(...)] goes on methods, not the constructor",
                ));
            }
            let options = method_options(&attribute)?;
            if let Some(count) = options.returns {
                method_returns.insert(method.sig.ident.to_string(), count);
            }
            if let Some(group) = options.group {
                if !groups.iter().any(|(name, _)| *name == group) {
                    return Err(syn::Error::new_spanned(
                        attribute,
                        format!("concurrency group {group:?} is not declared: #[manta::actor(concurrency_groups({group} = N))] on the impl block"),
                    ));
                }
                method_groups.push((method.sig.ident.to_string(), group));
            }
        }
        method.attrs = kept;
    }
    let group_names = groups.iter().map(|(name, _)| name);
    let group_sizes = groups.iter().map(|(_, size)| size);
    let grouped_methods = method_groups.iter().map(|(method, _)| method);
    let grouped_in = method_groups.iter().map(|(_, group)| group);
    let block = &block;
    let mut constructor = None;
    let mut handle_methods = Vec::new();
    let mut dispatch_arms = Vec::new();
    let mut any_async = false;
    for item in &block.items {
        let ImplItem::Fn(method) = item else { continue };
        let signature = &method.sig;
        let receiver = signature.inputs.first().and_then(|input| match input {
            FnArg::Receiver(receiver) => Some(receiver),
            FnArg::Typed(_) => None,
        });
        let Some(receiver) = receiver else {
            if signature.ident == "new" {
                constructor = Some(method);
            }
            continue;
        };
        if receiver.reference.is_none() {
            return Err(syn::Error::new_spanned(receiver, "actor methods take `&self` or `&mut self`"));
        }
        if !signature.generics.params.is_empty() {
            return Err(syn::Error::new_spanned(&signature.generics, "actor methods are not generic"));
        }
        let exclusive = receiver.mutability.is_some();
        let is_async = signature.asyncness.is_some();
        any_async |= is_async;
        let method_name = &signature.ident;
        let method_string = method_name.to_string();
        let parameters = parameters(signature.inputs.iter().skip(1))?;
        let names: Vec<_> = parameters.iter().map(|parameter| &parameter.name).collect();
        let types: Vec<_> = parameters.iter().map(|parameter| &parameter.ty).collect();
        let class_name_tokens = quote!(<#class as ::manta::ActorClass>::NAME);
        let docs = method.attrs.iter().filter(|attribute| attribute.path().is_ident("doc"));
        let encode = match method_returns.get(&method_string).copied() {
            None | Some(1) => {
                let (output, encode) = output_handling(&signature.output, &class_name_tokens);
                handle_methods.push(quote! {
                    #(#docs)*
                    pub fn #method_name(&self, #(#names: impl ::manta::IntoArg<#types>),*) -> ::manta::ObjectRef<#output> {
                        ::manta::ObjectRef::__from_raw(self.raw.call(
                            #method_string,
                            ::std::vec![#(::manta::__private::arg::<#types, _>(#names)),*],
                        ))
                    }
                });
                encode
            }
            Some(count) => {
                let (elements, encode) = several_outputs(&signature.output, &class_name_tokens, count)?;
                let raw: Vec<_> = (0..count).map(|index| format_ident!("return_{index}")).collect();
                handle_methods.push(quote! {
                    #(#docs)*
                    pub fn #method_name(&self, #(#names: impl ::manta::IntoArg<#types>),*) -> (#(::manta::ObjectRef<#elements>),*) {
                        let [#(#raw),*] = self.raw.call_returning::<#count>(
                            #method_string,
                            ::std::vec![#(::manta::__private::arg::<#types, _>(#names)),*],
                        );
                        (#(::manta::ObjectRef::__from_raw(#raw)),*)
                    }
                });
                encode
            }
        };
        let lock = if exclusive { quote!(write_owned) } else { quote!(read_owned) };
        let guard = if exclusive { quote!(mut guard) } else { quote!(guard) };
        let arm = if is_async {
            quote! {
                #method_string => ::core::option::Option::Some(::std::boxed::Box::pin(async move {
                    let #guard = cell.#lock().await;
                    #(let #names: #types = invocation.arg()?;)*
                    let output = guard.#method_name(#(#names),*).await;
                    #encode
                })),
            }
        } else {
            quote! {
                #method_string => ::core::option::Option::Some(::std::boxed::Box::pin(async move {
                    let #guard = cell.#lock().await;
                    ::manta::__private::run_blocking(move || {
                        let mut invocation = invocation;
                        #(let #names: #types = invocation.arg()?;)*
                        let output = guard.#method_name(#(#names),*);
                        #encode
                    })
                    .await
                })),
            }
        };
        dispatch_arms.push(arm);
    }
    let Some(constructor) = constructor else {
        return Err(syn::Error::new_spanned(
            block,
            "an actor class needs a constructor `fn new(...) -> Self`",
        ));
    };
    let constructor_parameters = parameters(constructor.sig.inputs.iter())?;
    let ctor_names: Vec<_> = constructor_parameters.iter().map(|parameter| &parameter.name).collect();
    let ctor_types: Vec<_> = constructor_parameters.iter().map(|parameter| &parameter.ty).collect();
    let construct_instance = match &constructor.sig.output {
        ReturnType::Type(_, ty) if result_ok_type(ty).is_some() => quote! {
            let instance: #class = #class::new(#(#ctor_names),*)
                .map_err(|error| ::manta::__private::InvokeError::Returned { message: error.to_string(), error: ::core::option::Option::None })?;
        },
        _ => quote! { let instance: #class = #class::new(#(#ctor_names),*); },
    };

    Ok(quote! {
        #block

        #[doc(hidden)]
        #[derive(Clone, Debug)]
        pub struct #methods_type {
            raw: ::manta::RawActorHandle,
        }

        #[allow(clippy::too_many_arguments, dead_code)]
        impl #methods_type {
            #(#handle_methods)*
        }

        impl ::manta::ActorClass for #class {
            const NAME: &'static str = concat!(module_path!(), "::", #class_name);
            const ASYNC: bool = #any_async;
            const CONCURRENCY_GROUPS: &'static [(&'static str, u32)] = &[#((#group_names, #group_sizes)),*];
            const METHOD_GROUPS: &'static [(&'static str, &'static str)] = &[#((#grouped_methods, #grouped_in)),*];
            type Methods = #methods_type;
            fn methods(raw: ::manta::RawActorHandle) -> #methods_type {
                #methods_type { raw }
            }
        }

        #[allow(clippy::too_many_arguments, dead_code)]
        impl #class {
            /// Creates an actor of this class in a worker process, with default options.
            pub fn remote(
                #(#ctor_names: impl ::manta::IntoArg<#ctor_types>),*
            ) -> ::core::result::Result<::manta::ActorHandle<#class>, ::manta::ActorError> {
                Self::options().remote(#(#ctor_names),*)
            }

            /// Options for creating an actor of this class; finish with `remote(args)`.
            pub fn options() -> #options_type {
                #options_type { options: ::core::default::Default::default() }
            }
        }

        #[doc(hidden)]
        #[derive(Debug, Clone)]
        pub struct #options_type {
            options: ::manta::ActorOptions,
        }

        #[allow(clippy::too_many_arguments, dead_code)]
        impl #options_type {
            ::manta::__private::actor_option_methods!();

            /// Creates the actor with these options.
            pub fn remote(
                self,
                #(#ctor_names: impl ::manta::IntoArg<#ctor_types>),*
            ) -> ::core::result::Result<::manta::ActorHandle<#class>, ::manta::ActorError> {
                ::manta::create_actor::<#class>(
                    self.options,
                    ::std::vec![#(::manta::__private::arg::<#ctor_types, _>(#ctor_names)),*],
                )
            }
        }

        #[doc(hidden)]
        #[allow(non_snake_case)]
        mod #registration {
            #[allow(unused_imports)]
            use super::*;

            fn construct(
                invocation: &mut ::manta::__private::Invocation,
            ) -> ::core::result::Result<::manta::__private::ActorCell, ::manta::__private::InvokeError> {
                #(let #ctor_names: #ctor_types = invocation.arg()?;)*
                #construct_instance
                ::core::result::Result::Ok(::std::sync::Arc::new(::manta::__private::RwLock::new(instance)))
            }

            fn dispatch(
                cell: &::manta::__private::ActorCell,
                method: &str,
                invocation: ::manta::__private::Invocation,
            ) -> ::core::option::Option<::manta::__private::MethodFuture> {
                #[allow(unused_mut)]
                let mut invocation = invocation;
                let cell = ::std::sync::Arc::clone(cell).downcast::<::manta::__private::RwLock<#class>>().ok()?;
                match method {
                    #(#dispatch_arms)*
                    _ => {
                        let _ = (cell, invocation);
                        ::core::option::Option::None
                    }
                }
            }

            ::manta::__private::inventory::submit! {
                ::manta::__private::ActorClassEntry {
                    name: <#class as ::manta::ActorClass>::NAME,
                    construct,
                    dispatch,
                    method_groups: <#class as ::manta::ActorClass>::METHOD_GROUPS,
                }
            }
        }
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}
