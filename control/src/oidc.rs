//! OpenID Connect sign-in: the authorization code flow with PKCE (S256), `state` and `nonce`,
//! against a provider found by discovery (`{issuer}/.well-known/openid-configuration`).
//!
//! [`Oidc::begin`] gives the provider URL to send the browser to and a [`Pending`] record that
//! the caller keeps, keyed by its `state`, until the browser comes back to the redirect URL.
//! The callback looks the record up by the `state` query parameter (which is the CSRF check) and
//! hands it with the `code` to [`Oidc::finish`], which exchanges the code and verifies the ID
//! token. Plain `http://` issuers are accepted, so a local test provider on 127.0.0.1 works.

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, TokenResponse, reqwest,
};

/// The client as `from_provider_metadata(..).set_redirect_uri(..)` returns it: the authorization
/// endpoint is set, the token and userinfo endpoints are whatever discovery found.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered provider, configured with our client id, secret and redirect URL.
pub struct Oidc {
    client: Client,
    http: reqwest::Client,
    issuer: String,
}

/// What the callback needs to finish one sign-in. Store it server side, keyed by `state`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The verified identity from the ID token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub sub: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "OIDC discovery failed: {0}. Check that the issuer URL is reachable from the control plane \
         and is spelled exactly as the `issuer` in its /.well-known/openid-configuration (scheme, \
         host, port, trailing slash)"
    )]
    Discovery(String),
    #[error(
        "OIDC code exchange at the provider's token endpoint failed: {0}. Sign in again; if it keeps \
         failing, check the client id, client secret and redirect URL registered with the provider"
    )]
    Exchange(String),
    #[error(
        "the provider's ID token was rejected: {0}. Sign in again; if it keeps failing, check the \
         configured issuer and client id and that this machine's clock is correct"
    )]
    InvalidIdToken(String),
    #[error("OIDC configuration error: {0}")]
    Config(String),
}

impl Oidc {
    /// Fetches the provider's discovery document and signing keys and builds the client.
    pub async fn discover(
        issuer: &str,
        client_id: &str,
        client_secret: Option<&str>,
        redirect_url: &str,
    ) -> Result<Oidc, OidcError> {
        if client_id.is_empty() {
            return Err(OidcError::Config(
                "the client id is empty; pass the client id registered with the provider".into(),
            ));
        }
        let issuer_url = IssuerUrl::new(issuer.to_owned()).map_err(|e| {
            OidcError::Config(format!(
                "issuer `{issuer}` is not a URL ({e}); pass it as the provider documents it, e.g. https://accounts.google.com"
            ))
        })?;
        let redirect = RedirectUrl::new(redirect_url.to_owned()).map_err(|e| {
            OidcError::Config(format!(
                "redirect URL `{redirect_url}` is not a URL ({e}); pass the absolute callback URL registered with the provider"
            ))
        })?;
        // Following redirects would let a provider point our requests anywhere (SSRF).
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                OidcError::Config(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
            .await
            .map_err(|e| OidcError::Discovery(format!("issuer `{issuer}`: {}", chain(&e))))?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(client_id.to_owned()),
            client_secret.map(|s| ClientSecret::new(s.to_owned())),
        )
        .set_redirect_uri(redirect);
        tracing::info!(issuer, client_id, redirect_url, "OIDC provider discovered");
        Ok(Oidc {
            client,
            http,
            issuer: issuer.to_owned(),
        })
    }

    /// The provider URL to send the browser to (scopes openid email profile, PKCE S256, random
    /// state + nonce), and what the callback needs to finish.
    pub fn begin(&self) -> (url::Url, Pending) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        // `openid` is added by the client itself.
        let (url, state, nonce) = self
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".to_owned()))
            .add_scope(Scope::new("profile".to_owned()))
            .set_pkce_challenge(challenge)
            .url();
        let pending = Pending {
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        };
        (url, pending)
    }

    /// Exchanges the code with the PKCE verifier, verifies the ID token (signature, issuer,
    /// audience, nonce), and returns its claims.
    pub async fn finish(&self, code: &str, pending: Pending) -> Result<Claims, OidcError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| {
                OidcError::Config(format!(
                    "issuer `{}` advertises no token_endpoint, so the code cannot be exchanged ({e}); use a provider that supports the authorization code flow",
                    self.issuer
                ))
            })?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                let mut msg = chain(&e);
                if let RequestTokenError::Parse(_, body) = &e {
                    let body = String::from_utf8_lossy(body);
                    msg.push_str(&format!(" (response body: {:.300})", body));
                }
                OidcError::Exchange(msg)
            })?;
        let id_token = response.id_token().ok_or_else(|| {
            OidcError::InvalidIdToken(
                "the token response carries no id_token (is `openid` an allowed scope for this client?)"
                    .into(),
            )
        })?;
        let verifier = self.client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(pending.nonce))
            .map_err(|e| OidcError::InvalidIdToken(chain(&e)))?;
        let name = claims
            .name()
            .and_then(|n| n.get(None).or_else(|| n.iter().next().map(|(_, v)| v)))
            .map(|n| n.as_str().to_owned());
        Ok(Claims {
            sub: claims.subject().as_str().to_owned(),
            email: claims.email().map(|e| e.as_str().to_owned()),
            name,
        })
    }
}

/// An error and its sources, `: `-separated (the openidconnect errors keep the cause in `source`).
fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}
