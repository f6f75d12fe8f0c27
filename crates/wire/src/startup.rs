//! Startup and authentication as a state machine without I/O: feed it backend messages, send
//! what it writes to `out`, stop when it says the session is ready.

use std::collections::HashMap;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::codec::{self, Backend};
use crate::error::{DbError, Error};

/// What the server told us during startup.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// ParameterStatus values (server_version, server_encoding, ...).
    pub parameters: HashMap<String, String>,
    pub process_id: i32,
    pub secret_key: i32,
    /// Notices sent during startup.
    pub notices: Vec<DbError>,
}

enum State {
    Authenticating,
    Scram(Box<ScramSha256>),
    WaitingForReady,
    Ready,
}

pub struct Startup {
    user: String,
    password: Option<String>,
    state: State,
    info: ServerInfo,
}

/// Where the exchange stands after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Keep reading (and send whatever was written to `out`).
    Continue,
    /// ReadyForQuery arrived: the session is usable.
    Ready,
}

impl Startup {
    pub fn new(user: &str, password: Option<&str>) -> Self {
        Startup {
            user: user.to_string(),
            password: password.map(str::to_string),
            state: State::Authenticating,
            info: ServerInfo::default(),
        }
    }

    /// The StartupMessage for a logical replication session on `database`.
    pub fn startup_message(
        &self,
        database: &str,
        application_name: Option<&str>,
        options: Option<&str>,
        out: &mut BytesMut,
    ) -> Result<(), Error> {
        let mut params = vec![
            ("user", self.user.as_str()),
            ("database", database),
            ("replication", "database"),
            ("client_encoding", "UTF8"),
        ];
        if let Some(app) = application_name {
            params.push(("application_name", app));
        }
        if let Some(opts) = options {
            params.push(("options", opts));
        }
        frontend::startup_message(params, out)
            .map_err(|e| Error::InvalidArgument(format!("startup parameters: {e}")))
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn into_info(self) -> ServerInfo {
        self.info
    }

    fn password(&self, method: &str) -> Result<&str, Error> {
        self.password.as_deref().ok_or_else(|| {
            Error::Auth(format!(
                "the server wants a password ({method}) for user {:?} but none is configured",
                self.user
            ))
        })
    }

    pub fn handle(&mut self, msg: Backend, out: &mut BytesMut) -> Result<Progress, Error> {
        let Backend::Message(msg) = msg else {
            return Err(unexpected(&msg));
        };
        let io = |e: std::io::Error| Error::Protocol(e.to_string());
        match (&mut self.state, msg) {
            (_, Message::ErrorResponse(body)) => {
                return Err(Error::from(codec::db_error(body.fields())?))
            }
            (_, Message::NoticeResponse(body)) => {
                let notice = codec::db_error(body.fields())?;
                tracing::info!(%notice, "server notice during startup");
                self.info.notices.push(notice);
            }
            (State::Authenticating, Message::AuthenticationOk) => {
                self.state = State::WaitingForReady;
            }
            (State::Authenticating, Message::AuthenticationCleartextPassword) => {
                let pw = self.password("cleartext")?;
                frontend::password_message(pw.as_bytes(), out).map_err(io)?;
            }
            (State::Authenticating, Message::AuthenticationMd5Password(body)) => {
                let pw = self.password("md5")?;
                let hash = md5_hash(self.user.as_bytes(), pw.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), out).map_err(io)?;
            }
            (State::Authenticating, Message::AuthenticationSasl(body)) => {
                let mechanisms: Vec<String> = body
                    .mechanisms()
                    .map(|m| Ok(m.to_string()))
                    .collect()
                    .map_err(io)?;
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(Error::Auth(format!(
                        "server offers SASL mechanisms {mechanisms:?}, none of which this client speaks"
                    )));
                }
                let pw = self.password("SCRAM-SHA-256")?;
                // No channel binding ("n"): honest even when the server offers -PLUS.
                let scram = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), out).map_err(io)?;
                self.state = State::Scram(Box::new(scram));
            }
            (State::Scram(scram), Message::AuthenticationSaslContinue(body)) => {
                scram
                    .update(body.data())
                    .map_err(|e| Error::Auth(format!("SCRAM: {e}")))?;
                frontend::sasl_response(scram.message(), out).map_err(io)?;
            }
            (State::Scram(scram), Message::AuthenticationSaslFinal(body)) => {
                // Verifies the server's signature: it proves the server knows the password too.
                scram
                    .finish(body.data())
                    .map_err(|e| Error::Auth(format!("SCRAM server signature: {e}")))?;
                self.state = State::Authenticating;
            }
            (State::Authenticating, Message::AuthenticationGss)
            | (State::Authenticating, Message::AuthenticationSspi)
            | (State::Authenticating, Message::AuthenticationKerberosV5)
            | (State::Authenticating, Message::AuthenticationScmCredential) => {
                return Err(Error::Auth(
                    "the server asks for GSSAPI/SSPI/Kerberos/SCM authentication; this client speaks password, md5 and SCRAM-SHA-256".into(),
                ));
            }
            (State::WaitingForReady, Message::ParameterStatus(p)) => {
                let name = p.name().map_err(io)?.to_string();
                let value = p.value().map_err(io)?.to_string();
                self.info.parameters.insert(name, value);
            }
            (State::WaitingForReady, Message::BackendKeyData(k)) => {
                self.info.process_id = k.process_id();
                self.info.secret_key = k.secret_key();
            }
            (State::WaitingForReady, Message::ReadyForQuery(_)) => {
                self.state = State::Ready;
                return Ok(Progress::Ready);
            }
            (_, other) => return Err(unexpected(&Backend::Message(other))),
        }
        Ok(Progress::Continue)
    }
}

fn unexpected(m: &Backend) -> Error {
    Error::Protocol(format!("unexpected {} during startup", codec::describe(m)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::parse_backend;

    fn msg(tag: u8, body: &[u8]) -> Backend {
        let mut b = BytesMut::new();
        b.extend([tag]);
        b.extend(((body.len() + 4) as u32).to_be_bytes());
        b.extend(body);
        parse_backend(&mut b).unwrap().unwrap()
    }

    fn auth(code: i32, rest: &[u8]) -> Backend {
        let mut body = code.to_be_bytes().to_vec();
        body.extend(rest);
        msg(b'R', &body)
    }

    fn finish(s: &mut Startup) -> ServerInfo {
        let mut out = BytesMut::new();
        assert_eq!(
            s.handle(auth(0, b""), &mut out).unwrap(),
            Progress::Continue
        );
        s.handle(msg(b'S', b"server_version\x0015.8\0"), &mut out)
            .unwrap();
        let mut key = 7i32.to_be_bytes().to_vec();
        key.extend(9i32.to_be_bytes());
        s.handle(msg(b'K', &key), &mut out).unwrap();
        assert_eq!(
            s.handle(msg(b'Z', b"I"), &mut out).unwrap(),
            Progress::Ready
        );
        assert!(out.is_empty());
        s.info().clone()
    }

    #[test]
    fn startup_message_asks_for_a_logical_replication_session() {
        let s = Startup::new("alice", None);
        let mut out = BytesMut::new();
        s.startup_message("db1", Some("bg"), None, &mut out)
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("user\0alice\0database\0db1\0replication\0database\0"));
        assert!(text.contains("application_name\0bg\0"));
    }

    #[test]
    fn md5_answer_matches_libpq() {
        let mut s = Startup::new("alice", Some("secret"));
        let mut out = BytesMut::new();
        s.handle(auth(5, &[1, 2, 3, 4]), &mut out).unwrap();
        let expected = md5_hash(b"alice", b"secret", [1, 2, 3, 4]);
        assert_eq!(out[0], b'p');
        assert_eq!(&out[5..out.len() - 1], expected.as_bytes());
        let info = finish(&mut s);
        assert_eq!(info.parameters["server_version"], "15.8");
        assert_eq!((info.process_id, info.secret_key), (7, 9));
    }

    #[test]
    fn cleartext_and_missing_password() {
        let mut s = Startup::new("alice", Some("pw"));
        let mut out = BytesMut::new();
        s.handle(auth(3, b""), &mut out).unwrap();
        assert_eq!(&out[..], b"p\0\0\0\x07pw\0");

        let mut s = Startup::new("alice", None);
        let err = s.handle(auth(5, &[0; 4]), &mut out).unwrap_err();
        assert!(matches!(err, Error::Auth(m) if m.contains("none is configured")));
    }

    #[test]
    fn scram_first_message_and_unknown_mechanisms() {
        let mut s = Startup::new("alice", Some("pw"));
        let mut out = BytesMut::new();
        s.handle(auth(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"), &mut out)
            .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with('p'));
        assert!(text.contains("SCRAM-SHA-256\0"));
        assert!(text.contains("n,,n=,r="));

        let mut s = Startup::new("alice", Some("pw"));
        let err = s
            .handle(auth(10, b"OAUTHBEARER\0\0"), &mut out)
            .unwrap_err();
        assert!(matches!(err, Error::Auth(_)));
    }

    #[test]
    fn server_error_is_typed() {
        let mut s = Startup::new("alice", Some("pw"));
        let err = s
            .handle(
                msg(
                    b'E',
                    b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed\0\0",
                ),
                &mut BytesMut::new(),
            )
            .unwrap_err();
        assert_eq!(err.code(), Some("28P01"));
    }

    #[test]
    fn unexpected_messages_are_protocol_errors() {
        let mut s = Startup::new("alice", Some("pw"));
        let err = s.handle(msg(b'Z', b"I"), &mut BytesMut::new()).unwrap_err();
        assert!(matches!(err, Error::Protocol(_)));
    }
}
