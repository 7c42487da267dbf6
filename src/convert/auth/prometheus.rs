//! KEDA's `prometheus` credentials → a `prometheusConnections` entry.
//!
//! | KEDA (TriggerAuthentication, `authModes` in the trigger) | spinscale connection |
//! |---|---|
//! | `bearer`: `bearerToken` | `bearerTokenFile` |
//! | `basic`: `username`, `password` | `basicAuth.usernameFile`, `basicAuth.passwordFile` |
//! | `tls`: `cert`, `key`; `ca` with any mode | `tls.certFile`, `tls.keyFile`, `tls.caFile` |
//! | `custom`: `customAuthHeader`, `customAuthValue` | `headers: {HEADER: {valueFile}}` |
//! | `podIdentity: aws` (or `aws-eks`), `awsRegion` | `sigv4: {region, service: aps, roleArn}` |
//! | `podIdentity: azure-workload` or `gcp` | `bearerTokenFile` kept fresh by a token sidecar |
//! | the trigger's `serverAddress`, the TriggerAuthentication's namespace | `addresses`, `namespaces` (`Entry`) |

use super::{FileRef, Index, Mapped, TriggerAuth, TriggerView};

/// Trigger metadata keys the connection replaces.
const AUTH_MODES: &str = spinscale_core::spec::AUTH_MODES;
const AWS_REGION: &str = "awsRegion";
const IDENTITY_OWNER: &str = "identityOwner";
const CUSTOM_AUTH_HEADER: &str = "customAuthHeader";

/// A token kept in a file by something next to spinscale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Platform {
    /// Azure Monitor workspace: an Entra ID token from Azure Workload Identity.
    Azure { identity_id: Option<String> },
    /// Google Cloud Managed Service for Prometheus: an OAuth token from GKE Workload Identity.
    Gcp,
}

/// AWS SigV4 signing (Amazon Managed Service for Prometheus).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SigV4 {
    pub region: String,
    pub role_arn: Option<String>,
    /// KEDA used the scale target's identity (`identityOwner: workload`), not its own.
    pub workload_identity: bool,
}

/// An entry of `prometheusConnections`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PrometheusConnection {
    pub bearer_token: Option<FileRef>,
    /// The bearer token is written by a sidecar, not mounted from a Secret.
    pub platform: Option<Platform>,
    pub username: Option<FileRef>,
    pub password: Option<FileRef>,
    pub ca: Option<FileRef>,
    pub cert: Option<FileRef>,
    pub key: Option<FileRef>,
    pub headers: Vec<(String, FileRef)>,
    pub sigv4: Option<SigV4>,
    /// What KEDA used, e.g. `authModes bearer`, for the skeleton's comment.
    pub summary: String,
}

impl PrometheusConnection {
    pub fn files(&self) -> Vec<&FileRef> {
        let singles = [&self.bearer_token, &self.username, &self.password, &self.ca, &self.cert, &self.key];
        singles.into_iter().flatten().chain(self.headers.iter().map(|(_, f)| f)).collect()
    }
}

/// Headers spinscale's connection sets itself, which `headers` may not name.
const RESERVED_HEADERS: [&str; 2] = ["authorization", "host"];

/// KEDA's `authModes` values.
const MODES: [&str; 4] = ["bearer", "basic", "tls", "custom"];

pub(super) fn map(view: &TriggerView<'_>, auth: Option<&TriggerAuth>, index: &Index) -> Result<Option<Mapped>, String> {
    let written = view.meta(AUTH_MODES);
    let Some(auth) = auth else {
        return match written {
            Some(modes) => Err(format!(
                "authModes {modes:?} takes its credentials from a TriggerAuthentication, and the trigger has no \
                 authenticationRef: there are no credentials to carry to spinscale; add the authenticationRef (and the \
                 TriggerAuthentication) or remove authModes"
            )),
            None => Ok(None),
        };
    };
    // KEDA reads authModes from the trigger's metadata only.
    let modes: Vec<String> = written
        .iter()
        .flat_map(|m| m.split(','))
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(unknown) = modes.iter().find(|m| !MODES.contains(&m.as_str())) {
        return Err(format!(
            "authModes {unknown:?}: spinscale carries bearer, basic, tls and custom (KEDA's other modes need a \
             token exchange spinscale does not make)"
        ));
    }
    let has = |mode: &str| modes.iter().any(|m| m == mode);
    if has("bearer") && has("basic") {
        return Err("authModes bearer and basic both set the Authorization header (KEDA refuses them together)".into());
    }
    let mut c = PrometheusConnection::default();
    let mut used: Vec<&str> = vec!["ca"];
    let mut summary = Vec::new();
    if !modes.is_empty() {
        summary.push(format!("authModes {}", modes.join(",")));
    }
    c.ca = auth.file("ca", "ca.crt")?;
    let require = |parameter: &str, file: &'static str, mode: &str| -> Result<FileRef, String> {
        auth.file(parameter, file)?.ok_or_else(|| {
            format!("{} has no parameter {parameter}, which authModes {mode} needs (KEDA would fail too)", auth.label)
        })
    };
    if has("bearer") {
        c.bearer_token = Some(require("bearerToken", "token", "bearer")?);
        used.push("bearerToken");
    }
    if has("basic") {
        c.username = Some(require("username", "username", "basic")?);
        c.password = Some(auth.file("password", "password")?.ok_or_else(|| {
            format!(
                "{} has no parameter password: KEDA then sends an empty one, spinscale's basicAuth reads it from \
                 a file; add a password key to the Secret (empty if the server wants none) and a password \
                 parameter",
                auth.label
            )
        })?);
        used.extend(["username", "password"]);
    }
    if has("tls") {
        c.cert = Some(require("cert", "tls.crt", "tls")?);
        c.key = Some(require("key", "tls.key", "tls")?);
        used.extend(["cert", "key"]);
    }
    if has("custom") {
        let header = match view.meta(CUSTOM_AUTH_HEADER) {
            Some(h) => Some(h.to_string()),
            None => index.literal(auth, CUSTOM_AUTH_HEADER)?,
        };
        let header = header
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("authModes custom needs customAuthHeader (in the trigger or {})", auth.label))?;
        if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "customAuthHeader {header:?}: spinscale sets that header itself; for an Authorization token use \
                 authModes bearer (bearerToken holds the token without its \"Bearer \" prefix)"
            ));
        }
        c.headers.push((header, require("customAuthValue", "header", "custom")?));
        used.extend([CUSTOM_AUTH_HEADER, "customAuthValue"]);
    }
    if let Some(identity) = &auth.pod_identity {
        if !modes.is_empty() {
            return Err(format!(
                "{}: spec.podIdentity ({}) together with authModes {}: KEDA authenticates with one of them; keep one",
                auth.label,
                identity.provider,
                modes.join(",")
            ));
        }
        summary.push(format!("podIdentity {}", identity.provider));
        match identity.provider.as_str() {
            "aws" | "aws-eks" => {
                let region = match view.meta(AWS_REGION) {
                    Some(r) => Some(r.to_string()),
                    None => index.literal(auth, AWS_REGION)?,
                }
                .or_else(|| region_of(view.meta("serverAddress")?))
                .ok_or_else(|| {
                    "podIdentity aws needs the workspace's region: awsRegion in the trigger, or a serverAddress \
                     https://aps-workspaces.REGION.amazonaws.com/..."
                        .to_string()
                })?;
                let role_arn = match &identity.role_arn {
                    Some(arn) => Some(arn.clone()),
                    None => index.literal(auth, "awsRoleArn")?,
                };
                used.extend([AWS_REGION, "awsRoleArn"]);
                let workload_identity = identity.identity_owner.as_deref() == Some("workload")
                    || view.meta(IDENTITY_OWNER) == Some("workload");
                c.sigv4 = Some(SigV4 { region, role_arn, workload_identity });
            }
            "azure-workload" => {
                c.platform = Some(Platform::Azure { identity_id: identity.identity_id.clone() });
            }
            "gcp" => c.platform = Some(Platform::Gcp),
            other => {
                return Err(format!(
                    "{}: spec.podIdentity.provider {other:?}: spinscale maps aws, aws-eks, azure-workload and gcp \
                     (the others are removed from KEDA or need a token exchange spinscale does not make)",
                    auth.label
                ));
            }
        }
    } else if auth.has("awsAccessKeyID") || auth.has("awsSecretAccessKey") {
        return Err(format!(
            "{} signs with static AWS keys (awsAccessKeyID): spinscale's sigv4 takes credentials from the standard \
             AWS chain only; give spinscale's ServiceAccount an IAM role (IRSA or EKS Pod Identity) and use \
             podIdentity: {{provider: aws}}",
            auth.label
        ));
    }
    let notes = auth
        .unused(&used)
        .map(|p| {
            format!(
                "{}: {} parameter {p} dropped: KEDA's prometheus scaler does not use it{}",
                view.field,
                auth.label,
                if modes.is_empty() { " without authModes" } else { " with these authModes" }
            )
        })
        .collect();
    c.summary = summary.join(", ");
    let mut consumed = vec![AUTH_MODES, CUSTOM_AUTH_HEADER];
    if c.sigv4.is_some() {
        consumed.extend([AWS_REGION, IDENTITY_OWNER]);
    }
    let uses_something = !modes.is_empty() || auth.pod_identity.is_some() || c.ca.is_some();
    let connection = uses_something.then_some(super::Connection::Prometheus(c));
    Ok(Some(Mapped { connection, consumed, notes }))
}

/// The region of an Amazon Managed Service for Prometheus endpoint,
/// `https://aps-workspaces.REGION.amazonaws.com/workspaces/ID`.
fn region_of(address: &str) -> Option<String> {
    let host = address.split("://").nth(1)?.split(['/', ':']).next()?;
    let region = host.strip_prefix("aps-workspaces.")?.split('.').next()?;
    (!region.is_empty()).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_comes_from_the_workspace_endpoint() {
        assert_eq!(
            region_of("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of("http://prometheus:9090"), None);
    }
}
