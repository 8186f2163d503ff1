//! Name holds as storage keeps them, so that a restart does not free every name to
//! whoever asks first (see `chat/identities.rs` for the rules).

/// Who owns a name, and when a connection last held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    /// `name_key` of the name: what collisions are decided on.
    pub key: String,
    /// The name as its owner typed it.
    pub name: String,
    /// A hash of the session token that owns it (see [`super::Owner`]).
    pub owner: String,
    /// Milliseconds since the Unix epoch when a connection last held it (now, while one
    /// does).
    pub last_seen: i64,
}
