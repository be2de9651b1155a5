//! A device's TLS, whichever backend runs it, and how it plugs into rumqttc.
//!
//! Three shapes, chosen once per device before it connects:
//! - rustls with the connect host as server name: rumqttc's own rustls transport (as before);
//! - rustls with a separate SNI name (`[target].sni`): rumqttc takes the server name from the
//!   connect host, so the handshake runs in the vendored rumqttc's stream layer instead, with
//!   `ServerName = sni`, under `Transport::Tcp`;
//! - OpenSSL: always in the stream layer ([`super::openssl`]).

use std::io;
use std::sync::Arc;

use openssl::ssl::SslConnector;
use rumqttc::{AsyncReadWrite, NetworkOptions, StreamLayer, TlsConfiguration, Transport};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::openssl::{connect_io, OpensslIdentity};
use super::options::Backend;

/// One device's TLS: the backend with its per-identity context, and the server name.
#[derive(Clone)]
pub enum DeviceTls {
    /// rustls with this config.
    Rustls {
        /// The identity's rustls config.
        config: Arc<ClientConfig>,
        /// Server name when it is not the connect host.
        sni: Option<Arc<str>>,
    },
    /// OpenSSL: the run's shared connector and this device's identity.
    Openssl {
        /// The run's connector (shared `SSL_CTX`).
        connector: SslConnector,
        /// The device's certificate, chain and key.
        identity: Arc<OpensslIdentity>,
        /// Server name when it is not the connect host.
        sni: Option<Arc<str>>,
    },
}

impl From<Arc<ClientConfig>> for DeviceTls {
    /// rustls, server name = connect host (what callers built before backends existed).
    fn from(config: Arc<ClientConfig>) -> DeviceTls {
        DeviceTls::Rustls { config, sni: None }
    }
}

impl DeviceTls {
    /// Which library runs the handshake.
    pub fn backend(&self) -> Backend {
        match self {
            DeviceTls::Rustls { .. } => Backend::Rustls,
            DeviceTls::Openssl { .. } => Backend::Openssl,
        }
    }

    /// The server name for a connection to `host`: the SNI name when set.
    pub fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        match self {
            DeviceTls::Rustls { sni, .. } | DeviceTls::Openssl { sni, .. } => {
                sni.as_deref().unwrap_or(host)
            }
        }
    }

    /// The rumqttc transport for a session to `host`, installing the stream layer in `net`
    /// when the handshake runs here rather than in rumqttc.
    pub fn transport(&self, host: &str, net: &mut NetworkOptions) -> Transport {
        match self {
            DeviceTls::Rustls { config, sni: None } => {
                Transport::tls_with_config(TlsConfiguration::Rustls(config.clone()))
            }
            _ => {
                net.set_stream_layer(self.stream_layer(host));
                Transport::Tcp
            }
        }
    }

    /// The rumqttc transport for MQTT over secure WebSocket: rumqttc's own wss with rustls,
    /// or plain WebSocket over this TLS session (OpenSSL, or a separate server name).
    pub fn websocket_transport(&self, host: &str, net: &mut NetworkOptions) -> Transport {
        match self {
            DeviceTls::Rustls { config, sni: None } => {
                Transport::wss_with_config(TlsConfiguration::Rustls(config.clone()))
            }
            _ => {
                net.set_stream_layer(self.stream_layer(host));
                Transport::Ws
            }
        }
    }

    /// The closure rumqttc calls with each new TCP connection (built once per session).
    fn stream_layer(&self, host: &str) -> StreamLayer {
        let name: Arc<str> = Arc::from(self.server_name(host));
        let tls = self.clone();
        Arc::new(move |tcp: Box<dyn AsyncReadWrite>| {
            let tls = tls.clone();
            let name = name.clone();
            Box::pin(async move { tls.handshake(&name, tcp).await })
        })
    }

    /// Runs the client handshake over `tcp` for server `name`.
    pub async fn handshake(
        &self,
        name: &str,
        tcp: Box<dyn AsyncReadWrite>,
    ) -> io::Result<Box<dyn AsyncReadWrite>> {
        match self {
            DeviceTls::Rustls { config, .. } => {
                let name = ServerName::try_from(name.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                Ok(Box::new(tls))
            }
            DeviceTls::Openssl {
                connector,
                identity,
                ..
            } => Ok(Box::new(connect_io(connector, identity, name, tcp).await?)),
        }
    }
}
