//! The client side of the control API, for `servent status`, `peers`,
//! `downloads`, `search --node` and `get --node`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::output::{ApiError, Versioned};

/// Longest answer read whole.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// Time to connect and get an answer's head.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest server-sent event.
const MAX_EVENT: usize = 1024 * 1024;

/// Where a running node's API is, and its token.
#[derive(Clone, Debug)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no control API answers at {addr} (is `servent run` running, with its API there?): {source}"
    )]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the node's API: {0}")]
    Http(String),
    #[error("the node said {status}: {error}")]
    Status { status: u16, error: String },
    #[error("the node's answer is not what was expected: {0}")]
    Decode(String),
}

impl Client {
    /// The API at `api` (else `SERVENT_RUN_API`, else 127.0.0.1:6347), with the
    /// token from `data_dir` (else `SERVENT_RUN_DATA_DIR`, else the platform's
    /// data directory); no token if none can be read (GETs still work).
    pub fn locate(api: Option<SocketAddr>, data_dir: Option<PathBuf>) -> Client {
        let addr = api
            .or_else(|| std::env::var("SERVENT_RUN_API").ok()?.parse().ok())
            .unwrap_or_else(|| super::DEFAULT_ADDR.parse().expect("a valid address"));
        let dir = data_dir
            .or_else(|| std::env::var_os("SERVENT_RUN_DATA_DIR").map(PathBuf::from))
            .or_else(crate::config::default_data_dir);
        let token = dir.and_then(|d| super::read_token(&d).ok());
        Client { addr, token }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let work = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|source| ClientError::Connect {
                    addr: self.addr,
                    source,
                })?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?;
            tokio::spawn(conn);
            let bytes = match &body {
                Some(v) => Bytes::from(serde_json::to_vec(v).expect("serializes")),
                None => Bytes::new(),
            };
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(header::HOST, self.addr.to_string());
            if body.is_some() {
                req = req.header(header::CONTENT_TYPE, "application/json");
            }
            if let Some(t) = &self.token {
                if let Ok(v) = HeaderValue::from_str(&format!("Bearer {t}")) {
                    req = req.header(header::AUTHORIZATION, v);
                }
            }
            let req = req
                .body(Full::new(bytes))
                .map_err(|e| ClientError::Http(e.to_string()))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| ClientError::Http(e.to_string()))
        };
        match tokio::time::timeout(TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Http(format!(
                "no answer from {} within {TIMEOUT:?}",
                self.addr
            ))),
        }
    }

    /// Calls the API: the status and the whole body; an error status is an
    /// error with the node's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let r = self.send(method, path, body).await?;
        let status = r.status();
        let bytes =
            tokio::time::timeout(TIMEOUT, Limited::new(r.into_body(), MAX_ANSWER).collect())
                .await
                .map_err(|_| ClientError::Http("the answer took too long".into()))?
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
        if !status.is_success() {
            let error = serde_json::from_slice::<Versioned<ApiError>>(&bytes)
                .map(|e| e.record.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Status {
                status: status.as_u16(),
                error,
            });
        }
        Ok((status, bytes))
    }

    /// Calls the API and reads a record of type `T`.
    pub async fn record<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (_, bytes) = self.call(method, path, body).await?;
        serde_json::from_slice::<Versioned<T>>(&bytes)
            .map(|v| v.record)
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Opens a server-sent event stream.
    pub async fn events(&self, path: &str) -> Result<Events, ClientError> {
        let r = self.send(Method::GET, path, None).await?;
        if !r.status().is_success() {
            return Err(ClientError::Status {
                status: r.status().as_u16(),
                error: "cannot open the event stream".into(),
            });
        }
        Ok(Events {
            body: r.into_body(),
            buf: BytesMut::new(),
        })
    }
}

/// A server-sent event stream being read.
pub struct Events {
    body: Incoming,
    buf: BytesMut,
}

impl Events {
    /// The next event: its name and data; None at the stream's end.
    pub async fn next(&mut self) -> Result<Option<(String, String)>, ClientError> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = self.buf.split_to(at + 2);
                let text = String::from_utf8_lossy(&block[..at]).into_owned();
                let (mut name, mut data) = (String::from("message"), String::new());
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && text.starts_with(':') {
                    continue;
                }
                return Ok(Some((name, data)));
            }
            if self.buf.len() > MAX_EVENT {
                return Err(ClientError::Http("an event over 1 MiB".into()));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(ClientError::Http(e.to_string())),
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
}
