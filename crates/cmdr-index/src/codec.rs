//! Values of the `commands` and `events` tables: a small fixed binary header
//! with what the index derives (status, outcome, root, log position) followed
//! by the record's JSON exactly as it is in the log. Storing the log bytes
//! as-is spares the indexer a decode-and-re-encode of every payload; the
//! indexer only probes the few fields it indexes.
//!
//! Layout (little-endian), version 1:
//!
//! ```text
//! command: [1u8 version][status u8][has_outcome u8][outcome u128][partition u32][offset u64][JSON]
//! event:   [1u8 version][root u128][partition u32][offset u64][JSON]
//! ```

use std::borrow::Cow;

use cmdr_contract::{Command, CommandStatus, Event, Outcome};
use serde::Deserialize;
use uuid::Uuid;

use crate::model::{status_code, CommandView, EventView, LogPosition};
use crate::{IndexError, Result};

const VERSION: u8 = 1;
const COMMAND_HEADER: usize = 1 + 1 + 1 + 16 + 4 + 8;
const EVENT_HEADER: usize = 1 + 16 + 4 + 8;

/// The fields of a logged command the index needs, and the shape of the
/// rest checked without building it: a record that would not decode as a
/// [`Command`] when read is not indexed.
#[derive(Deserialize)]
pub(crate) struct CommandProbe<'a> {
    pub(crate) id: Uuid,
    #[serde(borrow)]
    pub(crate) action: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) key: Cow<'a, str>,
    #[allow(dead_code)]
    data: AnyObject,
    #[allow(dead_code)]
    timestamp: i64,
    #[serde(default)]
    #[allow(dead_code)]
    meta: AnyObject,
}

/// Any JSON object, skipped as it is read.
#[derive(Default)]
struct AnyObject;

impl<'de> Deserialize<'de> for AnyObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = AnyObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<AnyObject, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(AnyObject)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The fields of a logged event the index needs.
#[derive(Deserialize)]
pub(crate) struct EventProbe<'a> {
    pub(crate) id: Uuid,
    pub(crate) parent: Uuid,
    #[serde(default)]
    pub(crate) root: Option<Uuid>,
    #[serde(borrow)]
    pub(crate) action: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) key: Cow<'a, str>,
    #[serde(default)]
    pub(crate) outcome: Option<Outcome>,
}

fn corrupt(table: &'static str, why: &str) -> IndexError {
    IndexError::Decode {
        table,
        error: serde::de::Error::custom(why),
    }
}

fn status_from(code: u8) -> Option<CommandStatus> {
    [
        CommandStatus::Pending,
        CommandStatus::Accepted,
        CommandStatus::Rejected,
    ]
    .into_iter()
    .find(|s| status_code(*s) == code)
}

/// Encodes a command value.
pub(crate) fn encode_command(
    status: CommandStatus,
    outcome: Option<u128>,
    pos: LogPosition,
    json: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(COMMAND_HEADER + json.len());
    v.push(VERSION);
    v.push(status_code(status));
    v.push(u8::from(outcome.is_some()));
    v.extend_from_slice(&outcome.unwrap_or(0).to_le_bytes());
    v.extend_from_slice(&pos.partition.to_le_bytes());
    v.extend_from_slice(&pos.offset.to_le_bytes());
    v.extend_from_slice(json);
    v
}

/// A copy of a command value with a new status and outcome.
pub(crate) fn with_outcome(value: &[u8], status: CommandStatus, outcome: u128) -> Result<Vec<u8>> {
    if value.len() < COMMAND_HEADER || value[0] != VERSION {
        return Err(corrupt("commands", "bad command value header"));
    }
    let mut v = value.to_vec();
    v[1] = status_code(status);
    v[2] = 1;
    v[3..19].copy_from_slice(&outcome.to_le_bytes());
    Ok(v)
}

/// The outcome event a command value records, if any.
pub(crate) fn outcome_of(value: &[u8]) -> Result<Option<u128>> {
    command_status(value)?;
    Ok((value[2] == 1).then(|| u128_at(value, 3)))
}

/// The status stored in a command value.
pub(crate) fn command_status(value: &[u8]) -> Result<CommandStatus> {
    if value.len() < COMMAND_HEADER || value[0] != VERSION {
        return Err(corrupt("commands", "bad command value header"));
    }
    status_from(value[1]).ok_or_else(|| corrupt("commands", "bad status"))
}

fn u128_at(b: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    u128::from_le_bytes(a)
}

fn pos_at(b: &[u8], at: usize) -> LogPosition {
    let mut p = [0u8; 4];
    p.copy_from_slice(&b[at..at + 4]);
    let mut o = [0u8; 8];
    o.copy_from_slice(&b[at + 4..at + 12]);
    LogPosition {
        partition: u32::from_le_bytes(p),
        offset: u64::from_le_bytes(o),
    }
}

/// Decodes a command value.
pub(crate) fn decode_command(value: &[u8]) -> Result<CommandView> {
    let status = command_status(value)?;
    let outcome_event = (value[2] == 1).then(|| Uuid::from_u128(u128_at(value, 3)));
    let position = pos_at(value, 19);
    let command =
        Command::from_json(&value[COMMAND_HEADER..]).map_err(|error| IndexError::Decode {
            table: "commands",
            error,
        })?;
    Ok(CommandView {
        command,
        status,
        outcome_event,
        position,
    })
}

/// Encodes an event value.
pub(crate) fn encode_event(root: u128, pos: LogPosition, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(EVENT_HEADER + json.len());
    v.push(VERSION);
    v.extend_from_slice(&root.to_le_bytes());
    v.extend_from_slice(&pos.partition.to_le_bytes());
    v.extend_from_slice(&pos.offset.to_le_bytes());
    v.extend_from_slice(json);
    v
}

/// The root stored in an event value.
pub(crate) fn event_root(value: &[u8]) -> Result<u128> {
    if value.len() < EVENT_HEADER || value[0] != VERSION {
        return Err(corrupt("events", "bad event value header"));
    }
    Ok(u128_at(value, 1))
}

/// An event value with its root replaced by `root`.
pub(crate) fn with_root(value: &[u8], root: u128) -> Result<Vec<u8>> {
    event_root(value)?;
    let mut v = value.to_vec();
    v[1..17].copy_from_slice(&root.to_le_bytes());
    Ok(v)
}

/// The outcome of the event in an event value.
pub(crate) fn event_outcome(value: &[u8]) -> Result<Option<Outcome>> {
    event_root(value)?;
    let probe: EventProbe<'_> =
        serde_json::from_slice(&value[EVENT_HEADER..]).map_err(|error| IndexError::Decode {
            table: "events",
            error,
        })?;
    Ok(probe.outcome)
}

/// Decodes an event value (its `root` filled in when the log value had none).
pub(crate) fn decode_event(value: &[u8]) -> Result<EventView> {
    let root = event_root(value)?;
    let position = pos_at(value, 17);
    let mut event =
        Event::from_json(&value[EVENT_HEADER..]).map_err(|error| IndexError::Decode {
            table: "events",
            error,
        })?;
    event.root.get_or_insert(Uuid::from_u128(root));
    Ok(EventView { event, position })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_values_round_trip_and_take_an_outcome() {
        let req = cmdr_contract::CommandRequest::from_value(
            serde_json::json!({"action": "a", "data": {"x": 1}}),
        )
        .unwrap();
        let c = Command::from_request(req, 5, Default::default()).unwrap();
        let pos = LogPosition {
            partition: 3,
            offset: 99,
        };
        let v = encode_command(CommandStatus::Pending, None, pos, &c.to_json());
        let back = decode_command(&v).unwrap();
        assert_eq!(
            (back.command, back.status, back.outcome_event, back.position),
            (c.clone(), CommandStatus::Pending, None, pos)
        );
        let v = with_outcome(&v, CommandStatus::Rejected, 7).unwrap();
        let back = decode_command(&v).unwrap();
        assert_eq!(
            (back.status, back.outcome_event),
            (CommandStatus::Rejected, Some(Uuid::from_u128(7)))
        );
        assert!(decode_command(&v[..10]).is_err());
    }
}
