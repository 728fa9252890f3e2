//! [`Buffer<T>`]: an immutable array of plain numbers that travels out of band and comes back
//! from the object store as a zero-copy view into shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;

mod sealed {
    pub trait Sealed {}
}

/// A plain number type a [`Buffer`] can hold: every bit pattern is a valid value, no padding.
///
/// # Safety
/// Implemented only for the primitive integer and float types (the trait is sealed).
pub unsafe trait Element:
    sealed::Sealed + Copy + Send + Sync + fmt::Debug + PartialEq + 'static
{
}

macro_rules! elements {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        // SAFETY: a primitive number: any bit pattern is valid, no padding, no pointers.
        unsafe impl Element for $t {}
    )*};
}
elements!(u8, i8, u16, i16, u32, i32, u64, i64, f32, f64);

/// An immutable array of `T`, cheap to clone. Built from a `Vec<T>` without copying; when it is
/// part of an object in the object store, reading it back gives a view into shared memory
/// (no copy, and the store keeps the bytes until the last view is dropped).
///
/// ```ignore
/// let weights = manta::put(manta::Buffer::from(vec![0.5f32; 1 << 20]))?;
/// let view: manta::Buffer<f32> = weights.get()?;   // zero-copy from shared memory
/// ```
pub struct Buffer<T: Element = u8> {
    /// Invariant: aligned for `T`, and a whole number of `T`s long.
    bytes: Bytes,
    _element: PhantomData<T>,
}

impl<T: Element> Buffer<T> {
    fn from_bytes_aligned(bytes: Bytes) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        ((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
            && bytes.len().is_multiple_of(size))
        .then_some(Buffer { bytes, _element: PhantomData })
    }

    /// A buffer over `bytes` (copied only if they are not aligned for `T`). `None` if the length
    /// is not a whole number of `T`s.
    pub fn from_bytes(bytes: Bytes) -> Option<Self> {
        if !bytes.len().is_multiple_of(std::mem::size_of::<T>()) {
            return None;
        }
        match Self::from_bytes_aligned(bytes.clone()) {
            Some(buffer) => Some(buffer),
            None => {
                let mut values = Vec::<T>::with_capacity(bytes.len() / std::mem::size_of::<T>());
                // SAFETY: the vector has capacity for `bytes.len()` bytes, every bit pattern
                // is a valid `T`, and the length is set after the copy fills it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        values.as_mut_ptr().cast::<u8>(),
                        bytes.len(),
                    );
                    values.set_len(bytes.len() / std::mem::size_of::<T>());
                }
                Some(Buffer::from(values))
            }
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as a shareable `Bytes` (no copy).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / std::mem::size_of::<T>()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Owns a `Vec<T>` behind a `Bytes` without copying it.
struct VecOwner<T: Element>(Vec<T>);

impl<T: Element> AsRef<[u8]> for VecOwner<T> {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `T` is a plain number type; its memory is initialised bytes.
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), std::mem::size_of_val(&self.0[..]))
        }
    }
}

impl<T: Element> From<Vec<T>> for Buffer<T> {
    fn from(values: Vec<T>) -> Self {
        Buffer { bytes: Bytes::from_owner(VecOwner(values)), _element: PhantomData }
    }
}

impl<T: Element> From<&[T]> for Buffer<T> {
    fn from(values: &[T]) -> Self {
        Buffer::from(values.to_vec())
    }
}

impl<T: Element> Deref for Buffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the invariant: aligned for `T` and a whole number of `T`s; any bit pattern is
        // a valid `T`; the bytes are immutable and live as long as `self.bytes`.
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().cast::<T>(), self.len()) }
    }
}

impl<T: Element> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        Buffer { bytes: self.bytes.clone(), _element: PhantomData }
    }
}

impl<T: Element> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer<{}>[{}]", std::any::type_name::<T>(), self.len())
    }
}

impl<T: Element> PartialEq for Buffer<T> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl<T: Element> Serialize for Buffer<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match codec::push_buffer(self.bytes.clone()) {
            Some(index) => serializer.serialize_u32(index),
            // Outside Manta's encoder (a user serialising to JSON, say): plain bytes.
            None => serializer.serialize_bytes(&self.bytes),
        }
    }
}

impl<'de, T: Element> Deserialize<'de> for Buffer<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if codec::decoding() {
            let index = u32::deserialize(deserializer)?;
            let bytes = codec::buffer(index)
                .flatten()
                .ok_or_else(|| D::Error::custom(format!("buffer {index} is not in the object")))?;
            Buffer::from_bytes(bytes).ok_or_else(|| D::Error::custom("a buffer of a partial element"))
        } else {
            let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
            Buffer::from_bytes(Bytes::from(bytes.into_vec()))
                .ok_or_else(|| D::Error::custom("a buffer of a partial element"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vec_becomes_a_buffer_without_a_copy() {
        let values = vec![1.5f32; 1000];
        let pointer = values.as_ptr();
        let buffer = Buffer::from(values);
        assert_eq!(buffer.as_ptr(), pointer);
        assert_eq!(buffer.len(), 1000);
        assert_eq!(buffer[999], 1.5);
    }

    #[test]
    fn unaligned_bytes_are_copied_into_aligned_memory() {
        let bytes = Bytes::from(vec![0u8; 17]).slice(1..);
        let buffer = Buffer::<u32>::from_bytes(bytes).unwrap();
        assert_eq!(buffer.len(), 4);
        assert_eq!(buffer.as_ptr() as usize % 4, 0);
        assert!(Buffer::<u32>::from_bytes(Bytes::from(vec![0u8; 5])).is_none());
    }
}
