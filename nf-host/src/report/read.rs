//! report.json and eval.json read in one pass into the fields the report draws, with no JSON
//! tree in between: a parsed `serde_json::Value` costs 10 to 20 times its text (a map node per
//! object, 32 bytes per value), so a report.json at the 64 MiB cap took more than a GiB.
//! Here every field the report does not draw is read through (its duplicate keys still refused,
//! as [`crate::strict_json`] refuses them) and dropped, and every field it draws lands in a
//! plain number or list: memory is a small multiple of the file's size.
//!
//! Every field is lenient as in [`super::run`]: one of another type reads as absent (`None`),
//! an element that is not an object as an empty object; only bad JSON and duplicate keys fail.
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The most JSON values of the `architecture` field read into a tree (a real description has a
/// few hundred); a larger one is read through and the model shown by its name.
const MAX_ARCHITECTURE_VALUES: usize = 100_000;

/// The visits of a lenient visitor for what it does not expect: scalars, lists and objects
/// are read through (objects checked for duplicate keys) and give `$other`.
macro_rules! other_scalars {
    ($other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($other)
        }
    };
}
macro_rules! other_seq {
    ($other:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok($other)
        }
    };
}
macro_rules! other_map {
    ($other:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            skip_map(map)?;
            Ok($other)
        }
    };
}

/// A value read through and dropped (its objects' keys checked for duplicates).
pub struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Skip;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            other_scalars!(Skip);
            other_seq!(Skip);
            other_map!(Skip);
        }
        d.deserialize_any(V)
    }
}

/// The error of a key seen twice in one object (the wording of [`crate::strict_json`]).
fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!(
        "duplicate key \"{}\"",
        crate::size::printable(key)
    ))
}

/// Read an object's keys and values through, refusing a key seen twice.
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    let mut seen = HashSet::new();
    while let Some(k) = map.next_key::<String>()? {
        if seen.contains(&k) {
            return Err(duplicate(&k));
        }
        map.next_value::<Skip>()?;
        seen.insert(k);
    }
    Ok(())
}

/// A number as found (absent, null, and any other value read as [`Scalar::Other`]); 16 bytes,
/// so a list of them stays near its text's size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Scalar {
    /// Absent, null, or not a number.
    #[default]
    Other,
    /// A non-negative integer.
    U64(u64),
    /// Any other number.
    F64(f64),
}

impl Scalar {
    /// The number as a `u64` (as `serde_json::Value::as_u64`).
    pub fn u64(self) -> Option<u64> {
        match self {
            Scalar::U64(v) => Some(v),
            _ => None,
        }
    }
    /// The number as an `f64` (as `serde_json::Value::as_f64`).
    pub fn f64(self) -> Option<f64> {
        match self {
            Scalar::U64(v) => Some(v as f64),
            Scalar::F64(v) => Some(v),
            Scalar::Other => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(match u64::try_from(v) {
                    Ok(u) => Scalar::U64(u),
                    Err(_) => Scalar::F64(v as f64),
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::U64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                // strict_json reads a non-finite number as null.
                Ok(if v.is_finite() {
                    Scalar::F64(v)
                } else {
                    Scalar::Other
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            other_seq!(Scalar::Other);
            other_map!(Scalar::Other);
        }
        d.deserialize_any(V)
    }
}

/// A string as found (`None`: absent, null or another value).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Text(pub Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            other_seq!(Text(None));
            other_map!(Text(None));
        }
        d.deserialize_any(V)
    }
}

/// A list whose elements read as `T`; `None` when the value is not a list.
#[derive(Debug)]
pub struct List<T>(pub Option<Vec<T>>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<T>, A::Error> {
                // No size hint is trusted: the list grows as it is read.
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<T>()? {
                    v.push(x);
                }
                v.shrink_to_fit();
                Ok(List(Some(v)))
            }
            other_scalars!(List(None));
            other_map!(List(None));
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A number of a list of numbers (`None`: not a number).
#[derive(Clone, Copy, Debug, Default)]
pub struct Num(pub Option<f64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Scalar::deserialize(d).map(|l| Num(l.f64()))
    }
}

/// The first and last element of a list as `u64` (a block's units), the rest read through.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ends(pub Option<u64>, pub Option<u64>);

impl<'de> Deserialize<'de> for Ends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ends;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ends, A::Error> {
                let Some(first) = seq.next_element::<Scalar>()? else {
                    return Ok(Ends(None, None));
                };
                let mut last = first.u64();
                while let Some(x) = seq.next_element::<Scalar>()? {
                    last = x.u64();
                }
                Ok(Ends(first.u64(), last))
            }
            other_scalars!(Ends(None, None));
            other_map!(Ends(None, None));
        }
        d.deserialize_any(V)
    }
}

/// A list of strings (the class names); `None` unless it is a list of strings only.
#[derive(Debug, Default)]
pub struct Strings(pub Option<Vec<String>>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let List(items) = List::<Text>::deserialize(d)?;
        Ok(Strings(
            items.and_then(|v| v.into_iter().map(|t| t.0).collect()),
        ))
    }
}

/// The fields of an object that the report reads.
pub trait Fields: Default {
    /// Read the value of `key` into `self` and say true, or say false (not a field: the caller
    /// reads the value through).
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error>;
    /// Called after the object's last key (to drop what was only needed while reading).
    fn finish(&mut self) {}
}

/// An object as found: null (or absent), another value (read as an empty object), or one.
#[derive(Debug, Default)]
pub enum Found<T> {
    /// Null or absent.
    #[default]
    Null,
    /// A value that is not an object.
    NotObject,
    /// An object's fields.
    Object(T),
}

impl<T: Default> Found<T> {
    /// The fields, empty unless an object (`None` for null).
    pub fn fields(self) -> Option<T> {
        match self {
            Found::Null => None,
            Found::NotObject => Some(T::default()),
            Found::Object(t) => Some(t),
        }
    }
}

impl<'de, T: Fields> Deserialize<'de> for Found<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Fields> Visitor<'de> for V<T> {
            type Value = Found<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found<T>, A::Error> {
                let mut t = T::default();
                let mut seen = HashSet::new();
                while let Some(k) = map.next_key::<String>()? {
                    if seen.contains(&k) {
                        return Err(duplicate(&k));
                    }
                    if !t.field(&k, &mut map)? {
                        map.next_value::<Skip>()?;
                    }
                    seen.insert(k);
                }
                t.finish();
                Ok(Found::Object(t))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Found<T>, E> {
                Ok(Found::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Found<T>, E> {
                Ok(Found::NotObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Found<T>, E> {
                Ok(Found::NotObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Found<T>, E> {
                Ok(Found::NotObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Found<T>, E> {
                Ok(Found::NotObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Found<T>, E> {
                Ok(Found::NotObject)
            }
            other_seq!(Found::NotObject);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A JSON tree of at most [`MAX_ARCHITECTURE_VALUES`] values (`None` when larger: read
/// through), duplicate keys refused.
#[derive(Debug, Default)]
pub struct SmallTree(pub Option<Value>);

impl<'de> Deserialize<'de> for SmallTree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut left = MAX_ARCHITECTURE_VALUES;
        de::DeserializeSeed::deserialize(TreeSeed(&mut left), d).map(SmallTree)
    }
}

/// Reads one value into a tree while `.0` values are left, else through.
struct TreeSeed<'a>(&'a mut usize);

impl<'de> de::DeserializeSeed<'de> for TreeSeed<'_> {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TreeSeed<'_> {
    type Value = Option<Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Option<Value>, E> {
        Ok(self.take(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<Value>, E> {
        Ok(self.take(Value::Number(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<Value>, E> {
        Ok(self.take(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<Value>, E> {
        let n = serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number);
        Ok(self.take(n))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Value>, E> {
        let keep = *self.0 > 0;
        Ok(self.take(Value::String(if keep {
            v.to_owned()
        } else {
            String::new()
        })))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Value>, E> {
        Ok(self.take(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        let mut items = Some(Vec::new());
        while let Some(x) = seq.next_element_seed(TreeSeed(&mut *self.0))? {
            match (&mut items, x) {
                (Some(v), Some(x)) => v.push(x),
                _ => items = None,
            }
        }
        Ok(items.and_then(|v| self.take(Value::Array(v))))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let mut m = Some(serde_json::Map::new());
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if seen.contains(&k) {
                return Err(duplicate(&k));
            }
            let v = map.next_value_seed(TreeSeed(&mut *self.0))?;
            match (&mut m, v) {
                (Some(m), Some(v)) => {
                    m.insert(k.clone(), v);
                }
                _ => m = None,
            }
            seen.insert(k);
        }
        Ok(m.and_then(|m| self.take(Value::Object(m))))
    }
}

impl TreeSeed<'_> {
    /// `v`, counted, while the count lasts.
    fn take(self, v: Value) -> Option<Value> {
        *self.0 = self.0.checked_sub(1)?;
        Some(v)
    }
}
