//! Manta's attribute macros. `#[manta::remote]` registers a function in the binary's registry of
//! remote functions, under its module path plus a hash of its signature, so that a worker
//! process of the same binary can run it by name.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::{parse_macro_input, FnArg, ItemFn, Pat};

/// Registers a function so that worker processes of this binary can run it.
///
/// ```ignore
/// #[manta::remote]
/// fn add(a: i64, b: i64) -> i64 { a + b }
/// // add::NAME is "my_crate::add#<signature hash>"; the registry maps it to `add`.
/// let sum: manta::ObjectRef<i64> = add::remote(1, 2);   // runs in a worker process
/// assert_eq!(sum.get()?, 3);
/// ```
/// Arguments and the return value must implement serde's `Serialize` and `DeserializeOwned`.
/// The function stays callable as before; the macro adds a module of the same name (modules and
/// functions live in different namespaces) holding `NAME` and the registration.
#[proc_macro_attribute]
pub fn remote(attribute: TokenStream, item: TokenStream) -> TokenStream {
    if !attribute.is_empty() {
        let error = syn::Error::new(proc_macro2::Span::call_site(), "#[manta::remote] takes no arguments");
        return error.to_compile_error().into();
    }
    let function = parse_macro_input!(item as ItemFn);
    match expand_remote(&function) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand_remote(function: &ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let signature = &function.sig;
    if signature.asyncness.is_some() || !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            signature,
            "#[manta::remote] functions are neither async nor generic",
        ));
    }
    let name = &signature.ident;
    let mut argument_types = Vec::new();
    let mut argument_names = Vec::new();
    for (index, input) in signature.inputs.iter().enumerate() {
        let FnArg::Typed(typed) = input else {
            return Err(syn::Error::new_spanned(input, "#[manta::remote] functions take no `self`"));
        };
        if !matches!(&*typed.pat, Pat::Ident(_) | Pat::Wild(_)) {
            return Err(syn::Error::new_spanned(
                &typed.pat,
                "name each argument of a #[manta::remote] function",
            ));
        }
        argument_types.push((*typed.ty).clone());
        argument_names.push(format_ident!("argument_{index}"));
    }
    let output = match &signature.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => quote!(#ty),
    };
    // The hash names this exact signature: a binary whose function changed shape is a different
    // function to the registry, so mismatched workers are caught by the registry fingerprint.
    let shape = quote!(fn(#(#argument_types),*) -> #output).to_string();
    let hash = format!("{:016x}", fnv1a(shape.as_bytes()));
    let visibility = &function.vis;
    Ok(quote! {
        #function

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code)]
        #visibility mod #name {
            #[allow(unused_imports)]
            use super::*;

            /// The name this function is registered under.
            pub const NAME: &str = concat!(module_path!(), "#", #hash);

            /// Runs the function as a task in a worker process; returns at once.
            pub fn remote(#(#argument_names: #argument_types),*) -> ::manta::ObjectRef<#output> {
                ::manta::__private::submit(NAME, &(#(#argument_names,)*))
            }

            fn invoke(arguments: &[u8]) -> ::core::result::Result<::std::vec::Vec<u8>, ::manta::__private::InvokeError> {
                let (#(#argument_names,)*): (#(#argument_types,)*) = ::manta::__private::decode_arguments(NAME, arguments)?;
                let output: #output = super::#name(#(#argument_names),*);
                ::manta::__private::encode_output(NAME, &output)
            }

            ::manta::__private::inventory::submit! {
                ::manta::__private::RemoteFunction { name: NAME, invoke }
            }
        }
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3))
}
