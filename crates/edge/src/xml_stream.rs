//! A client stream during negotiation: the transport, its framer, and the
//! request/response helpers the negotiation stages are written with. After resource
//! binding the same parts move into the connection actor.

use crate::io::Io;
use aviary_xmpp::writer::{self, STREAM_CLOSE};
use aviary_xmpp::{
    Element, Event, Framer, Limits, StreamError, StreamErrorCondition, StreamHeader, ns,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Size of one read. Reads go through a stack buffer in the connection actor, so an
/// idle connection holds no read buffer at all.
pub const READ_CHUNK: usize = 4096;

/// Why negotiation stopped without a bound session.
#[derive(Debug)]
pub enum Ended {
    /// We sent a stream error (or the error was already handled); connection closed.
    Error(StreamError),
    /// The peer closed the stream or the TCP connection.
    Closed,
}

impl From<StreamError> for Ended {
    fn from(e: StreamError) -> Self {
        Ended::Error(e)
    }
}

pub struct XmlStream {
    pub io: Io,
    pub framer: Framer,
    header_sent: bool,
    deadline: Instant,
    /// The served domain this stream is for (from the client's `to`).
    pub domain: String,
    pub lang: String,
    out: Vec<u8>,
}

impl XmlStream {
    pub fn new(io: Io, deadline: Instant) -> Self {
        XmlStream {
            io,
            framer: Framer::new(Limits::PRE_AUTH),
            header_sent: false,
            deadline,
            domain: String::new(),
            lang: "en".to_owned(),
            out: Vec::with_capacity(1024),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Reads the next framer event, reading from the transport as needed.
    pub async fn next_event(&mut self) -> Result<Event, Ended> {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match self.framer.next_event() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(self.fail(e).await),
            }
            let read = tokio::time::timeout_at(self.deadline, self.io.read(&mut buf)).await;
            match read {
                Err(_) => {
                    let e = StreamError::with_text(
                        StreamErrorCondition::ConnectionTimeout,
                        "Stream negotiation took too long",
                    );
                    return Err(self.fail(e).await);
                }
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Ended::Closed),
                Ok(Ok(n)) => self.framer.feed(&buf[..n]),
            }
        }
    }

    /// The next complete top-level element; a stream close or a new header here ends
    /// negotiation.
    pub async fn next_element(&mut self) -> Result<Element, Ended> {
        match self.next_event().await? {
            Event::Element(el) => Ok(el),
            Event::StreamClose => {
                self.close().await;
                Err(Ended::Closed)
            }
            Event::StreamOpen(_) => Err(self
                .fail(StreamError::with_text(
                    StreamErrorCondition::NotWellFormed,
                    "Unexpected stream header",
                ))
                .await),
        }
    }

    /// Waits for the client's stream header and answers with ours (RFC 6120 §4.2,
    /// §4.7). `domains` are the served domains; the first is the default.
    pub async fn open(&mut self, domains: &[String]) -> Result<StreamHeader, Ended> {
        let header = match self.next_event().await? {
            Event::StreamOpen(h) => h,
            _ => {
                return Err(self
                    .fail(StreamError::with_text(
                        StreamErrorCondition::NotWellFormed,
                        "Expected a stream header",
                    ))
                    .await);
            }
        };
        let requested = header.to.as_deref().map(normalize_domain);
        let domain = match requested {
            // RFC 6120 §4.7.2: 'to' SHOULD be present; without it, use our default.
            None => domains.first().cloned().unwrap_or_default(),
            Some(d) if domains.contains(&d) => d,
            Some(d) => {
                return Err(self
                    .fail(StreamError::with_text(
                        StreamErrorCondition::HostUnknown,
                        format!("This server does not serve '{d}'"),
                    ))
                    .await);
            }
        };
        self.domain = domain;
        if let Some(lang) = &header.lang {
            self.lang.clone_from(lang);
        }
        // RFC 6120 §4.7.5: no version means 0.9, which we do not speak; a higher
        // major version is answered with ours (1.0).
        let major = header
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.trim().parse::<u32>().ok());
        self.send_header(header.from.as_deref()).await?;
        if major.is_none_or(|m| m < 1) {
            return Err(self
                .fail(StreamError::with_text(
                    StreamErrorCondition::UnsupportedVersion,
                    "XMPP 1.0 is required",
                ))
                .await);
        }
        Ok(header)
    }

    async fn send_header(&mut self, to: Option<&str>) -> Result<(), Ended> {
        let id = random_id();
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        writer::write_stream_open(&mut out, &self.domain, to, &id, &self.lang);
        self.header_sent = true;
        let r = self.write_raw(&out).await;
        self.out = out;
        r
    }

    /// Writes one element (in the stream's default namespace) and flushes.
    pub async fn send(&mut self, el: &Element) -> Result<(), Ended> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        writer::write_element(el, ns::CLIENT, &mut out);
        let r = self.write_raw(&out).await;
        self.out = out;
        r
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), Ended> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout_at(self.deadline, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Ended::Closed),
        }
    }

    /// Sends a stream error (preceded by our header if none was sent yet, RFC 6120
    /// §4.9.1.1), closes the stream and returns what ended it.
    pub async fn fail(&mut self, error: StreamError) -> Ended {
        tracing::debug!(
            condition = error.condition.name(),
            "negotiation stream error"
        );
        if !self.header_sent {
            // The header's own failure would only mean the peer is gone already.
            let _ = self.send_header(None).await;
        }
        let mut out = Vec::with_capacity(256);
        writer::write_element(&error.to_element(), ns::CLIENT, &mut out);
        out.extend_from_slice(STREAM_CLOSE);
        let _ = self.write_raw(&out).await;
        self.shutdown().await;
        Ended::Error(error)
    }

    /// Answers the peer's `</stream:stream>` with ours and closes.
    pub async fn close(&mut self) {
        let _ = self.write_raw(STREAM_CLOSE).await;
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

/// Lowercases and trims a trailing dot; the served-domain list is normalised the
/// same way at start-up.
pub fn normalize_domain(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// A fresh, unguessable stream id (RFC 6120 §4.7.3).
pub fn random_id() -> String {
    use rand::Rng;
    let v: u128 = rand::rng().random();
    format!("{v:032x}")
}
