//! SigV4 for Amazon Managed Prometheus: signs a request with `aws-sigv4`, with credentials from
//! the standard AWS chain's two links that apply in a pod, implemented here instead of pulling in
//! the AWS SDK's `aws-config`:
//!
//! 1. the environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`;
//! 2. web identity, as EKS IRSA mounts it: `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`
//!    (`AWS_ROLE_SESSION_NAME` optional), exchanged at STS (`AssumeRoleWithWebIdentity`).
//!
//! With `roleArn`, those credentials then assume that role (`AssumeRole`, signed). STS is
//! `https://sts.REGION.amazonaws.com` (`AWS_REGION`, else the connection's region) unless
//! `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL` names another. Temporary credentials are kept
//! until five minutes before they expire.
//!
//! One exchange of each kind runs at a time, on a task of its own: queries wait for it (each only
//! as long as its own timeout allows) instead of asking STS themselves, and a query that gives up
//! does not cancel it. A failed exchange is remembered for [`RETRY_AFTER`] and handed to every
//! query in that time, so an unreachable STS costs one call per interval, not one per source.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use spinscale_core::spec::prometheus_connection::SigV4;
use tokio::time::Instant;
use tracing::info;

use super::form_encode;
use crate::signals::body;

/// Looks up an environment variable (the process's, or a test's).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The process's environment; blank values count as unset.
pub fn process_env() -> Env {
    Arc::new(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Temporary credentials are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The longest STS answer read.
const MAX_STS_ANSWER: usize = 64 * 1024;
/// How long one STS call may take.
const STS_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed exchange, queries get its error without asking STS again for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Signs requests for one connection, keeping its temporary credentials.
pub struct Signer {
    /// `prometheusConnections.NAME.sigv4`, for errors.
    field: String,
    settings: SigV4,
    env: Env,
    /// Temporary credentials, by where they came from.
    kept: Mutex<[Option<Credentials>; 2]>,
    /// The last failed exchange of each kind: when, and its error.
    failed: Mutex<[Option<(Instant, String)>; 2]>,
    /// How long a failure is handed out before STS is asked again ([`RETRY_AFTER`]).
    retry_after: Duration,
    /// One STS exchange of each kind at a time: concurrent queries wait for its credentials
    /// instead of asking STS themselves. The role's is taken before web identity's, never after.
    renewing: [tokio::sync::Mutex<()>; 2],
}

/// Where kept credentials came from.
#[derive(Clone, Copy)]
enum Kept {
    /// `AssumeRoleWithWebIdentity`.
    WebIdentity = 0,
    /// `AssumeRole` of `roleArn`.
    Role = 1,
}

impl Signer {
    /// A signer for connection `name`'s `settings`, reading the environment through `env`.
    pub fn new(name: &str, settings: &SigV4, env: Env) -> Self {
        Signer {
            field: format!("prometheusConnections.{name}.sigv4"),
            settings: settings.clone(),
            env,
            kept: Mutex::default(),
            failed: Mutex::default(),
            retry_after: RETRY_AFTER,
            renewing: Default::default(),
        }
    }

    /// Adds `x-amz-date`, `x-amz-security-token` (temporary credentials) and `authorization` to
    /// `request`, signing its method, URL, headers and body; `http` reaches STS when needed.
    pub async fn sign(self: &Arc<Self>, request: &mut reqwest::Request, http: &reqwest::Client) -> Result<(), String> {
        let credentials = match self.ready()? {
            Some(credentials) => credentials,
            None => {
                // On a task of its own: a caller that stops waiting (its timeout) does not cancel
                // the exchange, whose result the next callers then find.
                let (signer, http) = (self.clone(), http.clone());
                tokio::spawn(async move { signer.credentials(&http).await })
                    .await
                    .map_err(|e| format!("{}: {e}", self.field))??
            }
        };
        let (region, service) = (&self.settings.region, &self.settings.service);
        sign_request(request, &credentials, region, service).map_err(|e| format!("{}: {e}", self.field))
    }

    /// Credentials at hand without STS (the environment's keys, kept ones), or the error of an
    /// exchange that failed less than `retry_after` ago; `None` when an exchange is needed.
    fn ready(&self) -> Result<Option<Credentials>, String> {
        if self.settings.role_arn.is_some() {
            if let Some(kept) = self.kept(Kept::Role) {
                return Ok(Some(kept));
            }
            self.recent_failure(Kept::Role)?;
            if self.environment().is_none() {
                self.recent_failure(Kept::WebIdentity)?;
            }
            return Ok(None);
        }
        if let Some(credentials) = self.environment() {
            return Ok(Some(credentials));
        }
        if let Some(kept) = self.kept(Kept::WebIdentity) {
            return Ok(Some(kept));
        }
        self.recent_failure(Kept::WebIdentity)?;
        Ok(None)
    }

    /// The environment's keys, if set.
    fn environment(&self) -> Option<Credentials> {
        let env = &self.env;
        let (id, secret) = (env("AWS_ACCESS_KEY_ID")?, env("AWS_SECRET_ACCESS_KEY")?);
        Some(Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "environment"))
    }

    /// The error of the last exchange of `which`, if it failed less than `retry_after` ago.
    fn recent_failure(&self, which: Kept) -> Result<(), String> {
        let failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &failed[which as usize] {
            Some((at, error)) if at.elapsed() < self.retry_after => Err(error.clone()),
            _ => Ok(()),
        }
    }

    /// Keeps the credentials of an exchange of `which`, or remembers its failure.
    fn settle(&self, which: Kept, result: Result<Credentials, String>) -> Result<Credentials, String> {
        let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &result {
            Ok(credentials) => {
                failed[which as usize] = None;
                self.keep(which, credentials);
            }
            Err(error) => failed[which as usize] = Some((Instant::now(), error.clone())),
        }
        result
    }

    /// The credentials to sign with: the role's under `roleArn`, else the chain's.
    async fn credentials(&self, http: &reqwest::Client) -> Result<Credentials, String> {
        let Some(role) = &self.settings.role_arn else { return self.base(http).await };
        if let Some(kept) = self.kept(Kept::Role) {
            return Ok(kept);
        }
        let _renewing = self.renewing[Kept::Role as usize].lock().await;
        if let Some(kept) = self.kept(Kept::Role) {
            return Ok(kept);
        }
        self.recent_failure(Kept::Role)?;
        let base = self.base(http).await?;
        let session = self.session_name();
        let form =
            [("Action", "AssumeRole"), ("Version", "2011-06-15"), ("RoleArn", role), ("RoleSessionName", &session)];
        let assumed = self.settle(Kept::Role, self.sts(http, &form, Some(&base), None).await)?;
        info!(role = %role, "assumed the connection's role for SigV4");
        Ok(assumed)
    }

    /// The chain: the environment's keys, else web identity.
    async fn base(&self, http: &reqwest::Client) -> Result<Credentials, String> {
        if let Some(credentials) = self.environment() {
            return Ok(credentials);
        }
        let env = &self.env;
        let (Some(token_file), Some(role)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) else {
            return Err(format!(
                "{}: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN (as EKS IRSA does)",
                self.field
            ));
        };
        if let Some(kept) = self.kept(Kept::WebIdentity) {
            return Ok(kept);
        }
        let _renewing = self.renewing[Kept::WebIdentity as usize].lock().await;
        if let Some(kept) = self.kept(Kept::WebIdentity) {
            return Ok(kept);
        }
        self.recent_failure(Kept::WebIdentity)?;
        let credentials = self.settle(Kept::WebIdentity, self.web_identity(http, &token_file, &role).await)?;
        info!(role = %role, "exchanged the web identity token for AWS credentials");
        Ok(credentials)
    }

    /// One `AssumeRoleWithWebIdentity` with the token in `token_file`, for `role`.
    async fn web_identity(&self, http: &reqwest::Client, token_file: &str, role: &str) -> Result<Credentials, String> {
        // Read each time: the kubelet rotates the projected token.
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| format!("{}: AWS_WEB_IDENTITY_TOKEN_FILE {token_file}: {e}", self.field))?;
        let token = token.trim();
        let session = self.session_name();
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role),
            ("RoleSessionName", &session),
            ("WebIdentityToken", token),
        ];
        self.sts(http, &form, None, Some(token)).await
    }

    /// Kept credentials that are not about to expire.
    fn kept(&self, which: Kept) -> Option<Credentials> {
        let kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = |c: &&Credentials| c.expiry().is_none_or(|at| SystemTime::now() + RENEW_BEFORE < at);
        kept[which as usize].as_ref().filter(fresh).cloned()
    }

    fn keep(&self, which: Kept, credentials: &Credentials) {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[which as usize] = Some(credentials.clone());
    }

    fn session_name(&self) -> String {
        (self.env)("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "spinscale".to_string())
    }

    /// STS's URL: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL`, else the regional endpoint.
    fn sts_endpoint(&self) -> (String, String) {
        let env = &self.env;
        let region =
            env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| self.settings.region.clone());
        let endpoint = env("AWS_ENDPOINT_URL_STS").or_else(|| env("AWS_ENDPOINT_URL")).unwrap_or_else(|| {
            let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
            format!("https://sts.{region}.{suffix}")
        });
        (endpoint.trim_end_matches('/').to_string(), region)
    }

    /// One STS action (a form POST), signed with `signed_by` when given; its credentials.
    /// `secret` is what the request carries that an answer must not echo into an error.
    async fn sts(
        &self,
        http: &reqwest::Client,
        form: &[(&str, &str)],
        signed_by: Option<&Credentials>,
        secret: Option<&str>,
    ) -> Result<Credentials, String> {
        let action = form[0].1;
        let failed = |why: String| format!("{}: STS {action}: {why}", self.field);
        let (endpoint, region) = self.sts_endpoint();
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
        let mut request = http
            .post(format!("{endpoint}/"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
            .body(body.join("&"))
            .timeout(STS_TIMEOUT)
            .build()
            .map_err(|e| failed(format!("{endpoint} is not a usable URL: {e}")))?;
        if let Some(credentials) = signed_by {
            sign_request(&mut request, credentials, &region, "sts").map_err(failed)?;
        }
        let answer = body::fetch(reqwest::RequestBuilder::from_parts(http.clone(), request), MAX_STS_ANSWER)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let text = String::from_utf8_lossy(&answer.body);
        if !answer.status.is_success() {
            let code = tag(&text, "Code").unwrap_or("no error code");
            let message = tag(&text, "Message").map(unescape).unwrap_or_default();
            let message = match secret {
                Some(secret) if !secret.is_empty() => message.replace(secret, "<redacted>"),
                _ => message,
            };
            let message: String = message.chars().take(300).collect();
            return Err(failed(format!("HTTP {}: {code}: {message}", answer.status.as_u16())));
        }
        credentials_of(&text).ok_or_else(|| failed(format!("no credentials in the answer ({})", answer.describe())))
    }
}

/// Signs `request` in place: its method, URL, headers (but those SigV4 leaves out) and body.
fn sign_request(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    service: &str,
) -> Result<(), String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing: {e}"))?
        .into();
    let body = request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
    let headers = request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)));
    let signable =
        SignableRequest::new(request.method().as_str(), request.url().as_str(), headers, SignableBody::Bytes(body))
            .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| format!("signing: {e}"))?.into_parts();
    let (headers, _) = instructions.into_parts();
    for header in headers {
        let name = HeaderName::from_static(header.name());
        let mut value = HeaderValue::from_str(header.value()).map_err(|e| format!("signing: {e}"))?;
        value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

/// The credentials of an `AssumeRole…Response`.
fn credentials_of(xml: &str) -> Option<Credentials> {
    let part = tag(xml, "Credentials")?;
    let expiry = tag(part, "Expiration")
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .and_then(|at| u64::try_from(at.timestamp()).ok())
        .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
        // Never kept forever: STS's shortest session, when the answer does not say.
        .or_else(|| Some(SystemTime::now() + Duration::from_secs(900)));
    Some(Credentials::new(
        tag(part, "AccessKeyId")?,
        tag(part, "SecretAccessKey")?,
        tag(part, "SessionToken").map(str::to_string),
        expiry,
        "sts",
    ))
}

/// The text between `<name>` (or `<name attributes>`) and `</name>`, trimmed.
fn tag<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}");
    let mut from = 0;
    let start = loop {
        let at = from + xml[from..].find(&open)?;
        let rest = &xml[at + open.len()..];
        if rest.starts_with('>') || rest.starts_with(char::is_whitespace) {
            break at + open.len() + rest.find('>')? + 1;
        }
        from = at + open.len();
    };
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..end].trim())
}

/// XML's five entities.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Arc::new(move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn settings(role_arn: Option<&str>) -> SigV4 {
        SigV4 { region: "eu-west-1".into(), service: "aps".into(), role_arn: role_arn.map(str::to_string) }
    }

    #[test]
    fn sts_answers_are_read_for_credentials_and_errors() {
        let ok = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                  <AssumeRoleWithWebIdentityResult><Credentials>\
                  <AccessKeyId>ASIAEXAMPLE</AccessKeyId><SecretAccessKey>wJal/rX+Utn</SecretAccessKey>\
                  <SessionToken>FwoGZ</SessionToken><Expiration>2030-01-02T03:04:05Z</Expiration>\
                  </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let credentials = credentials_of(ok).unwrap();
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(credentials.secret_access_key(), "wJal/rX+Utn");
        assert_eq!(credentials.session_token(), Some("FwoGZ"));
        assert_eq!(credentials.expiry(), Some(UNIX_EPOCH + Duration::from_secs(1_893_553_445)));
        let error = "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>\
                     <Message>Token &quot;x&quot; expired</Message></Error></ErrorResponse>";
        assert_eq!(tag(error, "Code"), Some("InvalidIdentityToken"));
        assert_eq!(unescape(tag(error, "Message").unwrap()), "Token \"x\" expired");
        assert_eq!(tag("<CodeX>a</CodeX>", "Code"), None);
    }

    #[tokio::test]
    async fn the_environment_comes_first_and_nothing_found_is_named() {
        let http = reqwest::Client::new();
        let signer = Arc::new(Signer::new(
            "amp",
            &settings(None),
            env(&[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret"), ("AWS_ROLE_ARN", "x")]),
        ));
        let credentials = signer.credentials(&http).await.unwrap();
        assert_eq!((credentials.access_key_id(), credentials.session_token()), ("AKIDEXAMPLE", None));
        let mut request = http
            .get("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/query?query=up")
            .build()
            .unwrap();
        signer.sign(&mut request, &http).await.unwrap();
        let authorization = request.headers()["authorization"].to_str().unwrap();
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
                && authorization.contains("/eu-west-1/aps/aws4_request"),
            "{authorization}"
        );
        assert!(request.headers().contains_key("x-amz-date"));

        let none = Signer::new("amp", &settings(None), env(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")]));
        let err = none.credentials(&http).await.unwrap_err();
        assert!(err.starts_with("prometheusConnections.amp.sigv4: no AWS credentials"), "{err}");
    }

    #[tokio::test]
    async fn a_failed_exchange_is_handed_to_every_waiting_query_and_retried_after_the_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "web-token").unwrap();
        // An STS endpoint that is no URL fails at once, without I/O; each exchange reads it once.
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let base = env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", "arn:aws:iam::111122223333:role/r"),
            ("AWS_ENDPOINT_URL_STS", "http://[not-a-host"),
        ]);
        let counted = asked.clone();
        let env: Env = Arc::new(move |name| {
            if name == "AWS_ENDPOINT_URL_STS" {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            base(name)
        });
        let mut signer = Signer::new("amp", &settings(None), env);
        signer.retry_after = Duration::from_secs(1);
        let signer = Arc::new(signer);
        let http = reqwest::Client::new();
        let sign = || {
            let signer = signer.clone();
            let http = http.clone();
            async move {
                let mut request = http.get("https://aps-workspaces.eu-west-1.amazonaws.com/q").build().unwrap();
                signer.sign(&mut request, &http).await
            }
        };
        // 30 sources on one connection ask at once: one exchange, its error for all.
        let results = futures_util::future::join_all((0..30).map(|_| sign())).await;
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1, "one STS call for 30 queries");
        for result in &results {
            let err = result.as_ref().unwrap_err();
            assert!(err.starts_with("prometheusConnections.amp.sigv4: STS AssumeRoleWithWebIdentity: "), "{err}");
        }
        // Within the back-off the failure is handed out again at once.
        assert_eq!(sign().await.unwrap_err(), *results[0].as_ref().unwrap_err());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
        // After it, STS is asked again.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(sign().await.is_err());
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn sts_is_regional_unless_an_endpoint_is_set() {
        let signer = Signer::new("amp", &settings(None), env(&[]));
        assert_eq!(signer.sts_endpoint(), ("https://sts.eu-west-1.amazonaws.com".into(), "eu-west-1".into()));
        let signer = Signer::new("amp", &settings(None), env(&[("AWS_REGION", "cn-north-1")]));
        assert_eq!(signer.sts_endpoint().0, "https://sts.cn-north-1.amazonaws.com.cn");
        let signer = Signer::new("amp", &settings(None), env(&[("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9/")]));
        assert_eq!(signer.sts_endpoint().0, "http://127.0.0.1:9");
    }
}
