//! Hakiri control-plane tokens.
//!
//! A token is a [biscuit](https://www.biscuitsec.org): a chain of signed Datalog blocks, sent as
//! URL-safe base64. The control plane signs the first (authority) block with its root Ed25519 key;
//! anyone holding the public key can verify a token.
//!
//! The authority block names who the token speaks for, what it may do, and until when:
//!
//! ```text
//! user("<oidc sub>");            // or node("<node id>") for a node's token
//! right("<project>", "read");    // one fact per granted (project, right)
//! right("<project>", "edit");
//! check if time($t), $t < <expiry>;
//! ```
//!
//! To authorize a request the server adds its own facts and one policy:
//!
//! ```text
//! time(<now>); project("<project>"); operation("<right>");
//! allow if project($p), operation($op), right($p, $op);
//! ```
//!
//! Every check of every block must pass too. Attenuation ([`attenuate`]) appends a block, offline
//! and without the root key, that holds only checks: which operations are kept, optionally one
//! project, optionally an earlier expiry. Facts in appended blocks cannot widen a token: the policy
//! only trusts the authority block and the authorizer's own facts.
//!
//! Untrusted values (subjects, project names) are only ever passed as Datalog terms or parameters,
//! never formatted into Datalog source.

use std::time::{Duration, SystemTime};

use biscuit_auth::builder::{self, Algorithm, AuthorizerBuilder, BlockBuilder, Check, Fact};
use biscuit_auth::error as berr;
use biscuit_auth::{Authorizer, AuthorizerLimits, Biscuit, KeyPair, PrivateKey, UnverifiedBiscuit};

/// What a token may do on a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Read the project's document (join its room).
    Read,
    /// Change the project's document.
    Edit,
    /// Apply the project (`/apply`).
    Apply,
    /// Run the project's pipelines (`/run`); what nodes do.
    Run,
}

impl Right {
    pub const ALL: [Right; 4] = [Right::Read, Right::Edit, Right::Apply, Right::Run];

    /// The name used in the token's Datalog and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Edit => "edit",
            Right::Apply => "apply",
            Right::Run => "run",
        }
    }

    pub fn parse(s: &str) -> Option<Right> {
        Right::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A signed-in user, by OIDC `sub`.
    User(String),
    /// A node, by node id.
    Node(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no token: sign in with `hakiri team login`, or pass a token")]
    Missing,
    #[error("the token is not a valid Hakiri token ({0}): sign in again with `hakiri team login`")]
    Malformed(String),
    #[error("the token expired: sign in again with `hakiri team login`")]
    Expired,
    #[error("the token does not allow {right} on project {project}")]
    Forbidden {
        project: String,
        right: &'static str,
    },
    #[error("token error: {0}")]
    Internal(String),
}

impl TokenError {
    /// 401 for Missing/Malformed/Expired (the client should sign in again), 403 for Forbidden,
    /// 500 for Internal.
    pub fn http_status(&self) -> u16 {
        match self {
            TokenError::Missing | TokenError::Malformed(_) | TokenError::Expired => 401,
            TokenError::Forbidden { .. } => 403,
            TokenError::Internal(_) => 500,
        }
    }
}

/// The control plane's root key pair: signs tokens and verifies them.
pub struct Keys {
    root: KeyPair,
}

// By hand, so that logging a struct holding the keys never prints the private key.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("public", &self.public_key_hex())
            .finish()
    }
}

impl Keys {
    /// A fresh Ed25519 root key pair.
    pub fn generate() -> Keys {
        Keys {
            root: KeyPair::new(),
        }
    }

    /// Reads what [`Keys::to_private_bytes`] wrote: the 32-byte Ed25519 private key.
    pub fn from_private_bytes(bytes: &[u8]) -> Result<Keys, TokenError> {
        let key = PrivateKey::from_bytes(bytes, Algorithm::Ed25519)
            .map_err(|e| TokenError::Internal(format!("invalid root key: {e}")))?;
        Ok(Keys {
            root: KeyPair::from(&key),
        })
    }

    pub fn to_private_bytes(&self) -> Vec<u8> {
        self.root.private().to_bytes().to_vec()
    }

    pub fn public_key_hex(&self) -> String {
        self.root.public().to_bytes_hex()
    }

    /// A user's token: authority facts `user({sub})`; `right({project}, {right})` for each grant;
    /// `check if time($t), $t < {expiry}`.
    pub fn mint_user(
        &self,
        sub: &str,
        grants: &[(String, Vec<Right>)],
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let grants: Vec<(&str, Right)> = grants
            .iter()
            .flat_map(|(project, rights)| rights.iter().map(move |r| (project.as_str(), *r)))
            .collect();
        self.mint_at(&Subject::User(sub.to_string()), &grants, expiry(ttl)?)
    }

    /// A node's token: `node({id})`; `right({project}, "read")` and `right({project}, "run")`;
    /// the expiry check.
    pub fn mint_node(
        &self,
        node_id: &str,
        project: &str,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let grants = [(project, Right::Read), (project, Right::Run)];
        self.mint_at(&Subject::Node(node_id.to_string()), &grants, expiry(ttl)?)
    }

    /// Verifies the signature and every check (with `time(now)`, `project(p)`, `operation(right)`
    /// facts) and the policy `allow if project($p), operation($op), right($p, $op)`; returns the
    /// subject.
    pub fn authorize(
        &self,
        token: &str,
        project: &str,
        right: Right,
    ) -> Result<Subject, TokenError> {
        let token = self.parse(token)?;
        let mut authorizer = run(&token, project, right)?;
        subject(&mut authorizer)
    }

    /// Which of the four rights pass for this project (empty if none; Err only when the token is
    /// missing, malformed or expired, or on an internal failure).
    pub fn rights(&self, token: &str, project: &str) -> Result<Vec<Right>, TokenError> {
        rights(&self.parse(token)?, project)
    }

    /// The projects the token's authority block grants (from `right($p, $r)` facts), for listing.
    /// The token is verified first (signature, expiry), and a project is listed only if at least
    /// one right passes on it, so a token attenuated to one project lists only that project.
    pub fn projects(&self, token: &str) -> Result<Vec<String>, TokenError> {
        let token = self.parse(token)?;
        let mut probe = probe(&token)?;
        // Queries only see the authority block and the authorizer, not appended blocks.
        let granted: Vec<(String,)> = probe
            .query("granted($p) <- right($p, $r)")
            .map_err(internal)?;
        let granted: std::collections::BTreeSet<String> =
            granted.into_iter().map(|(p,)| p).collect();
        let mut projects = Vec::new();
        for project in granted {
            if !rights(&token, &project)?.is_empty() {
                projects.push(project);
            }
        }
        Ok(projects)
    }

    /// Who a valid, unexpired token speaks for, whatever its rights.
    pub fn subject(&self, token: &str) -> Result<Subject, TokenError> {
        let token = self.parse(token)?;
        let mut probe = probe(&token)?;
        let users: Vec<(String,)> = probe.query("u($s) <- user($s)").map_err(internal)?;
        if let Some((u,)) = users.into_iter().next() {
            return Ok(Subject::User(u));
        }
        let nodes: Vec<(String,)> = probe.query("n($s) <- node($s)").map_err(internal)?;
        nodes
            .into_iter()
            .next()
            .map(|(n,)| Subject::Node(n))
            .ok_or_else(|| TokenError::Malformed("it names no user or node".into()))
    }

    /// Verifies the signature with the root public key.
    fn parse(&self, token: &str) -> Result<Biscuit, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        Biscuit::from_base64(token, self.root.public()).map_err(malformed)
    }

    /// Mints with an explicit expiry (tests use one in the past).
    fn mint_at(
        &self,
        subject: &Subject,
        grants: &[(&str, Right)],
        expiry: SystemTime,
    ) -> Result<String, TokenError> {
        let (name, id) = match subject {
            Subject::User(sub) => ("user", sub.as_str()),
            Subject::Node(node) => ("node", node.as_str()),
        };
        let build = || -> Result<String, berr::Token> {
            let mut authority = Biscuit::builder().fact(fact(name, &[id]))?;
            for &(project, right) in grants {
                authority = authority.fact(fact("right", &[project, right.as_str()]))?;
            }
            authority
                .check(expiry_check(expiry)?)?
                .build(&self.root)?
                .to_base64()
        };
        build().map_err(internal)
    }
}

/// Offline attenuation, without the root key: appends a block that holds
/// `check if operation("read") or operation("run")` (one alternative per kept right;
/// `check if false` when none is kept), optionally `check if project({p})`, and optionally an
/// earlier expiry `check if time($t), $t < {expiry}`. The signature is not checked here: the server
/// rejects a token that was not valid to begin with.
pub fn attenuate(
    token: &str,
    keep: &[Right],
    project: Option<&str>,
    ttl: Option<Duration>,
) -> Result<String, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    let unverified = UnverifiedBiscuit::from_base64(token).map_err(malformed)?;
    let expiry = ttl.map(expiry).transpose()?;

    let block = || -> Result<BlockBuilder, berr::Token> {
        // Only the fixed right names are formatted into the source; they are not user input.
        let ops = if keep.is_empty() {
            "false".to_string()
        } else {
            keep.iter()
                .map(|r| format!("operation(\"{}\")", r.as_str()))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let mut block = BlockBuilder::new().check(format!("check if {ops}").as_str())?;
        if let Some(project) = project {
            let mut check = Check::try_from("check if project({project})")?;
            check.set("project", project)?;
            block = block.check(check)?;
        }
        if let Some(expiry) = expiry {
            block = block.check(expiry_check(expiry)?)?;
        }
        Ok(block)
    };
    let block = block().map_err(internal)?;
    // Appending only fails for a sealed token, which cannot be attenuated.
    unverified
        .append(block)
        .map_err(malformed)?
        .to_base64()
        .map_err(internal)
}

/// An authorizer over `token` that allows anything, run once: only a failed expiry check
/// (or a broken token) is an error; the attenuation checks need project/operation facts and
/// fail, which is fine. Its facts can then be queried.
fn probe(token: &Biscuit) -> Result<biscuit_auth::Authorizer, TokenError> {
    let mut probe = AuthorizerBuilder::new()
        .set_limits(limits())
        .time()
        .policy("allow if true")
        .map_err(internal)?
        .build(token)
        .map_err(malformed)?;
    if let Err(e) = probe.authorize() {
        match refusal(e, "", Right::Read) {
            TokenError::Forbidden { .. } => {}
            other => return Err(other),
        }
    }
    Ok(probe)
}

/// Datalog run limits. Tokens hold a handful of facts; tight limits stop a crafted token from
/// burning CPU. The time bound is above the library's 1 ms default so a loaded server does not
/// refuse valid tokens.
fn limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 1_000,
        max_iterations: 100,
        max_time: Duration::from_millis(20),
    }
}

/// A fact of string terms; values go in as terms, never through the Datalog parser.
fn fact(name: &str, terms: &[&str]) -> Fact {
    let terms: Vec<_> = terms.iter().map(|t| builder::string(t)).collect();
    builder::fact(name, terms.as_slice())
}

fn expiry(ttl: Duration) -> Result<SystemTime, TokenError> {
    SystemTime::now()
        .checked_add(ttl)
        .ok_or_else(|| TokenError::Internal(format!("token lifetime too long: {ttl:?}")))
}

/// `check if time($t), $t < {expiry}`; dates are whole seconds, so a zero ttl is already expired.
/// [`refusal`] recognises this check by its `check if time(` prefix.
fn expiry_check(expiry: SystemTime) -> Result<Check, berr::Token> {
    let mut check = Check::try_from("check if time($t), $t < {expiry}")?;
    check.set("expiry", expiry)?;
    Ok(check)
}

/// Runs the authorizer for one request; on success it is returned for queries.
fn run(token: &Biscuit, project: &str, right: Right) -> Result<Authorizer, TokenError> {
    let mut authorizer = AuthorizerBuilder::new()
        .set_limits(limits())
        .time()
        .fact(fact("project", &[project]))
        .and_then(|a| a.fact(fact("operation", &[right.as_str()])))
        .and_then(|a| a.policy("allow if project($p), operation($op), right($p, $op)"))
        .map_err(internal)?
        // Loading the token's blocks fails only for a broken token.
        .build(token)
        .map_err(malformed)?;
    authorizer
        .authorize()
        .map_err(|e| refusal(e, project, right))?;
    Ok(authorizer)
}

fn rights(token: &Biscuit, project: &str) -> Result<Vec<Right>, TokenError> {
    let mut rights = Vec::new();
    for right in Right::ALL {
        match run(token, project, right) {
            Ok(_) => rights.push(right),
            Err(TokenError::Forbidden { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(rights)
}

fn subject(authorizer: &mut Authorizer) -> Result<Subject, TokenError> {
    let users: Vec<(String,)> = authorizer
        .query("subject($s) <- user($s)")
        .map_err(internal)?;
    if let Some((sub,)) = users.into_iter().next() {
        return Ok(Subject::User(sub));
    }
    let nodes: Vec<(String,)> = authorizer
        .query("subject($n) <- node($n)")
        .map_err(internal)?;
    nodes
        .into_iter()
        .next()
        .map(|(node,)| Subject::Node(node))
        .ok_or_else(|| TokenError::Malformed("it names no user or node".to_string()))
}

/// Maps a failed authorization. A failed expiry check means Expired (the client should sign in
/// again, not ask for rights it has); any other failed check, or no matching policy, is Forbidden.
fn refusal(e: berr::Token, project: &str, right: Right) -> TokenError {
    match e {
        berr::Token::FailedLogic(
            berr::Logic::Unauthorized { checks, .. } | berr::Logic::NoMatchingPolicy { checks },
        ) => {
            let expired = checks.iter().any(|check| {
                let rule = match check {
                    berr::FailedCheck::Block(c) => &c.rule,
                    berr::FailedCheck::Authorizer(c) => &c.rule,
                };
                rule.starts_with("check if time(")
            });
            if expired {
                TokenError::Expired
            } else {
                TokenError::Forbidden {
                    project: project.to_string(),
                    right: right.as_str(),
                }
            }
        }
        // A slow run under load, or our own Datalog failing, is the server's fault.
        berr::Token::RunLimit(berr::RunLimit::Timeout)
        | berr::Token::Language(_)
        | berr::Token::InternalError => internal(e),
        // Too many facts or iterations, bad expressions, broken blocks: the token's fault.
        e => malformed(e),
    }
}

fn malformed(e: berr::Token) -> TokenError {
    TokenError::Malformed(match e {
        // The outer message is generic ("error deserializing or verifying the token").
        berr::Token::Format(inner) => inner.to_string(),
        e => e.to_string(),
    })
}

fn internal(e: impl std::fmt::Display) -> TokenError {
    TokenError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn user_token(keys: &Keys, grants: &[(&str, &[Right])]) -> String {
        let grants: Vec<(String, Vec<Right>)> = grants
            .iter()
            .map(|(p, r)| (p.to_string(), r.to_vec()))
            .collect();
        keys.mint_user("alice-sub", &grants, HOUR).unwrap()
    }

    #[test]
    fn mint_and_authorize() {
        let keys = Keys::generate();
        let token = user_token(&keys, &[("p1", &[Right::Read, Right::Edit])]);
        assert_eq!(
            keys.authorize(&token, "p1", Right::Edit).unwrap(),
            Subject::User("alice-sub".to_string())
        );
        assert_eq!(
            keys.rights(&token, "p1").unwrap(),
            vec![Right::Read, Right::Edit]
        );
        let err = keys.authorize(&token, "p1", Right::Apply).unwrap_err();
        assert!(
            matches!(err, TokenError::Forbidden { right: "apply", .. }),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 403);
    }

    #[test]
    fn another_project_is_forbidden() {
        let keys = Keys::generate();
        let token = user_token(&keys, &[("p1", &[Right::Read])]);
        let err = keys.authorize(&token, "p2", Right::Read).unwrap_err();
        assert!(
            matches!(&err, TokenError::Forbidden { project, right: "read" } if project == "p2"),
            "{err:?}"
        );
        assert!(keys.rights(&token, "p2").unwrap().is_empty());
    }

    #[test]
    fn untrusted_strings_stay_terms() {
        let keys = Keys::generate();
        // Would grant edit on "p2" if it were formatted into the Datalog source.
        let project = r#"p1", "read"); right("p2", "edit"#;
        let token = user_token(&keys, &[(project, &[Right::Read])]);
        assert!(keys.authorize(&token, project, Right::Read).is_ok());
        assert!(keys.rights(&token, "p2").unwrap().is_empty());
    }

    #[test]
    fn expired_tokens() {
        let keys = Keys::generate();
        let zero = keys
            .mint_user(
                "alice-sub",
                &[("p1".to_string(), vec![Right::Read])],
                Duration::ZERO,
            )
            .unwrap();
        let err = keys.authorize(&zero, "p1", Right::Read).unwrap_err();
        assert!(matches!(err, TokenError::Expired), "{err:?}");
        assert_eq!(err.http_status(), 401);

        let past = SystemTime::now() - HOUR;
        let old = keys
            .mint_at(
                &Subject::Node("n1".to_string()),
                &[("p1", Right::Read)],
                past,
            )
            .unwrap();
        assert!(matches!(
            keys.authorize(&old, "p1", Right::Read),
            Err(TokenError::Expired)
        ));
        assert!(matches!(keys.rights(&old, "p1"), Err(TokenError::Expired)));
        assert!(matches!(keys.projects(&old), Err(TokenError::Expired)));
        // Expired wins over Forbidden: the client should sign in, not ask for rights.
        assert!(matches!(
            keys.authorize(&old, "p2", Right::Edit),
            Err(TokenError::Expired)
        ));
    }

    #[test]
    fn attenuated_read_only() {
        let keys = Keys::generate();
        let token = user_token(
            &keys,
            &[("p1", &[Right::Read, Right::Edit]), ("p2", &[Right::Read])],
        );
        let read_only = attenuate(&token, &[Right::Read], Some("p1"), Some(HOUR)).unwrap();
        assert_eq!(
            keys.authorize(&read_only, "p1", Right::Read).unwrap(),
            Subject::User("alice-sub".to_string())
        );
        let err = keys.authorize(&read_only, "p1", Right::Edit).unwrap_err();
        assert!(
            matches!(err, TokenError::Forbidden { right: "edit", .. }),
            "{err:?}"
        );
        assert!(matches!(
            keys.authorize(&read_only, "p2", Right::Read),
            Err(TokenError::Forbidden { .. })
        ));
        assert_eq!(keys.rights(&read_only, "p1").unwrap(), vec![Right::Read]);
        assert_eq!(keys.projects(&token).unwrap(), vec!["p1", "p2"]);
        assert_eq!(keys.projects(&read_only).unwrap(), vec!["p1"]);

        // An earlier expiry in an appended block is enforced too.
        let short = attenuate(&token, &Right::ALL, None, Some(Duration::ZERO)).unwrap();
        assert!(matches!(
            keys.authorize(&short, "p1", Right::Read),
            Err(TokenError::Expired)
        ));
        // Keeping nothing leaves a token that allows nothing.
        let none = attenuate(&token, &[], None, None).unwrap();
        assert!(keys.rights(&none, "p1").unwrap().is_empty());
    }

    #[test]
    fn tampered_and_foreign_tokens_are_malformed() {
        let keys = Keys::generate();
        let token = user_token(&keys, &[("p1", &[Right::Read])]);
        let mut bytes = token.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let err = keys.authorize(&tampered, "p1", Right::Read).unwrap_err();
        assert!(matches!(err, TokenError::Malformed(_)), "{err:?}");

        let foreign = user_token(&Keys::generate(), &[("p1", &[Right::Read])]);
        assert!(matches!(
            keys.authorize(&foreign, "p1", Right::Read),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            keys.authorize("not a token", "p1", Right::Read),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            keys.authorize("  ", "p1", Right::Read),
            Err(TokenError::Missing)
        ));
    }

    #[test]
    fn node_token_reads_and_runs() {
        let keys = Keys::generate();
        let token = keys.mint_node("node-7", "p1", HOUR).unwrap();
        assert_eq!(
            keys.authorize(&token, "p1", Right::Run).unwrap(),
            Subject::Node("node-7".to_string())
        );
        assert_eq!(
            keys.rights(&token, "p1").unwrap(),
            vec![Right::Read, Right::Run]
        );
        assert_eq!(keys.projects(&token).unwrap(), vec!["p1"]);
    }

    #[test]
    fn keys_round_trip() {
        let keys = Keys::generate();
        let token = user_token(&keys, &[("p1", &[Right::Read])]);
        let again = Keys::from_private_bytes(&keys.to_private_bytes()).unwrap();
        assert_eq!(again.public_key_hex(), keys.public_key_hex());
        assert!(again.authorize(&token, "p1", Right::Read).is_ok());
        assert!(Keys::from_private_bytes(&[0; 5]).is_err());
    }

    #[test]
    fn right_names() {
        for right in Right::ALL {
            assert_eq!(Right::parse(right.as_str()), Some(right));
            assert_eq!(
                serde_json::to_string(&right).unwrap(),
                format!("\"{}\"", right.as_str())
            );
        }
        assert_eq!(Right::parse("admin"), None);
    }
}
