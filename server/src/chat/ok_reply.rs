//! `{"ok":true, ...the body's fields}`: a successful reply, written in one pass.
//!
//! Every ack of the contract is an object with `"ok"` first and the reply's fields after
//! it (PROTOCOL.md, "Acks"). Two obvious ways to write it cost a fifth to a quarter of
//! answering a message, measured with callgrind under the load tool:
//! - a struct with `ok` and a `#[serde(flatten)]` body: serde's flatten goes through a
//!   map serializer field by field;
//! - the body serialized alone with `"ok":true` spliced in front of its fields, then
//!   wrapped with `RawValue::from_string`, which parses the whole text again to check
//!   what serde_json has just written.
//!
//! Here the body's own `Serialize` runs against a serializer that adds the `ok` field as
//! the struct (or map) opens and forwards everything else, and
//! `serde_json::value::to_raw_value` keeps the text without parsing it again.
//!
//! Guaranteed: the same text as the flattened struct (the tests compare them), and no
//! reply at all, never a broken one, for a body that is not a struct or map.

use serde::ser::{Impossible, SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// The body with `"ok":true` in front of its fields. `None` if the body is not a struct or
/// map (every reply type is a struct) or does not serialize.
pub fn ok_reply<T: Serialize>(body: &T) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&OkFirst(body)).ok()
}

struct OkFirst<'a, T>(&'a T);

impl<T: Serialize> Serialize for OkFirst<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(AddOk(serializer))
    }
}

/// Forwards a struct or a map to the serializer inside, with `ok` as its first field;
/// refuses anything else.
struct AddOk<S>(S);

fn not_an_object<E: serde::ser::Error>() -> E {
    E::custom("a reply body must be a struct or a map")
}

/// The serializer methods of values that are not objects: each refuses.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $out:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$out, S::Error> {
            Err(not_an_object())
        })*
    };
}

impl<S: Serializer> Serializer for AddOk<S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = Impossible<S::Ok, S::Error>;
    type SerializeTuple = Impossible<S::Ok, S::Error>;
    type SerializeTupleStruct = Impossible<S::Ok, S::Error>;
    type SerializeTupleVariant = Impossible<S::Ok, S::Error>;
    type SerializeMap = S::SerializeMap;
    type SerializeStruct = S::SerializeStruct;
    type SerializeStructVariant = Impossible<S::Ok, S::Error>;

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        let mut object = self.0.serialize_struct(name, len + 1)?;
        object.serialize_field("ok", &true)?;
        Ok(object)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        let mut object = self.0.serialize_map(len.map(|len| len + 1))?;
        object.serialize_entry("ok", &true)?;
        Ok(object)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(self)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        value.serialize(self)
    }

    refuse! {
        serialize_bool(bool) -> S::Ok;
        serialize_i8(i8) -> S::Ok;
        serialize_i16(i16) -> S::Ok;
        serialize_i32(i32) -> S::Ok;
        serialize_i64(i64) -> S::Ok;
        serialize_u8(u8) -> S::Ok;
        serialize_u16(u16) -> S::Ok;
        serialize_u32(u32) -> S::Ok;
        serialize_u64(u64) -> S::Ok;
        serialize_f32(f32) -> S::Ok;
        serialize_f64(f64) -> S::Ok;
        serialize_char(char) -> S::Ok;
        serialize_str(&str) -> S::Ok;
        serialize_bytes(&[u8]) -> S::Ok;
        serialize_none() -> S::Ok;
        serialize_unit() -> S::Ok;
        serialize_unit_struct(&'static str) -> S::Ok;
        serialize_unit_variant(&'static str, u32, &'static str) -> S::Ok;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<S::Ok, S::Error> {
        Err(not_an_object())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use app::protocol::{EmptyReply, Message, SendReply};

    #[derive(Serialize)]
    struct Flattened<'a, T: Serialize> {
        ok: bool,
        #[serde(flatten)]
        body: &'a T,
    }

    fn flattened<T: Serialize>(body: &T) -> String {
        serde_json::to_string(&Flattened { ok: true, body }).unwrap()
    }

    #[test]
    fn an_ok_reply_is_what_a_flattened_struct_gives() {
        let message = SendReply {
            message: Message {
                id: 7,
                room: "general".into(),
                author: "ann \"the\" {brace}".into(),
                text: "}{ \\ ünï".into(),
                ts: 1,
                client_id: "c-1".into(),
                ..Message::default()
            },
        };
        assert_eq!(ok_reply(&message).unwrap().get(), flattened(&message));
        assert_eq!(
            ok_reply(&EmptyReply {}).unwrap().get(),
            flattened(&EmptyReply {})
        );
        assert_eq!(ok_reply(&EmptyReply {}).unwrap().get(), r#"{"ok":true}"#);
        let map = BTreeMap::from([("b", 2), ("a", 1)]);
        assert_eq!(ok_reply(&map).unwrap().get(), flattened(&map));
        // The text is JSON a parser takes back.
        let parsed: serde_json::Value =
            serde_json::from_str(ok_reply(&message).unwrap().get()).unwrap();
        assert_eq!(parsed["message"]["author"], "ann \"the\" {brace}");
    }

    #[test]
    fn a_body_that_is_not_an_object_gives_no_reply() {
        assert!(ok_reply(&5).is_none());
        assert!(ok_reply(&vec![1]).is_none());
        assert!(ok_reply(&"text").is_none());
        assert!(ok_reply(&()).is_none());
        assert!(ok_reply(&Some(5)).is_none());
    }
}
