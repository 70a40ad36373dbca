//! Who may call the gateway, from Envoy Gateway's `SecurityPolicy`: API keys (`apiKeyAuth`, keys
//! from Secrets whose entries are client id -> key) or JWTs (`jwt`, a local JWKS), and
//! `authorization` rules over the headers the gateway and the authentication set, such as the
//! caller's id and the model (`x-ai-eg-model`). They become Envoy's own `api_key_auth`,
//! `jwt_authn` and `rbac` filters, placed after the routing stage: the model is known by then (so
//! rules can name it), and the routing stage turns their plain-text refusals into errors in the
//! caller's API format.

use crate::blocks::header_match_input;
use crate::resources::{ClientPolicySpec, Object, Secret};
use crate::yaml::{plain, string, Map, Node, Seq, SeqStyle};
use crate::RenderError;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallersPlan {
    /// The header naming the authenticated caller, written by Envoy's filters and read by the
    /// filter (usage summaries, access logs) and by rate-limit rules.
    pub caller_header: String,
    pub authentication: Authentication,
    pub authorization: Option<RbacPlan>,
}

#[derive(Clone, PartialEq, Eq)]
pub enum Authentication {
    ApiKeys {
        clients: Vec<(String, String)>,
        key_headers: Vec<String>,
        hide: bool,
    },
    Jwt {
        providers: Vec<JwtProviderPlan>,
    },
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authentication::ApiKeys {
                clients,
                key_headers,
                ..
            } => {
                let ids: Vec<&str> = clients.iter().map(|(id, _)| id.as_str()).collect();
                write!(
                    f,
                    "ApiKeys {{ clients: {ids:?}, key_headers: {key_headers:?}, .. }}"
                )
            }
            Authentication::Jwt { providers } => write!(f, "Jwt {{ providers: {providers:?} }}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtProviderPlan {
    pub name: String,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub jwks: String,
    pub claim_to_headers: Vec<(String, String)>,
}

/// Envoy's RBAC takes one action per filter: allow the listed principals (default Deny), or deny
/// them (default Allow).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacPlan {
    pub allow_listed: bool,
    pub policies: Vec<RbacPolicy>,
}

/// A named rule: every header must carry one of its values.
pub type RbacPolicy = (String, Vec<(String, Vec<String>)>);

impl CallersPlan {
    /// The headers Envoy's authentication writes besides the caller header: a JWT's claims
    /// (`claimToHeaders`). A caller's own copies must go before it runs.
    pub fn identity_headers(&self) -> Vec<&str> {
        match &self.authentication {
            Authentication::Jwt { providers } => {
                let mut headers: Vec<&str> = providers
                    .iter()
                    .flat_map(|p| p.claim_to_headers.iter().map(|(header, _)| header.as_str()))
                    .filter(|header| *header != self.caller_header)
                    .collect();
                headers.sort_unstable();
                headers.dedup();
                headers
            }
            Authentication::ApiKeys { .. } => Vec::new(),
        }
    }

    /// The headers callers present their keys in (`extractFrom`): they must never reach AWS.
    pub fn key_headers(&self) -> Vec<&str> {
        match &self.authentication {
            Authentication::ApiKeys { key_headers, .. } => {
                key_headers.iter().map(String::as_str).collect()
            }
            Authentication::Jwt { .. } => Vec::new(),
        }
    }

    /// The callers counted in metrics of their own (see [`Self::counts_callers`]).
    pub fn counted_callers(&self) -> Vec<&str> {
        match &self.authentication {
            Authentication::ApiKeys { clients, .. } => {
                clients.iter().map(|(id, _)| id.as_str()).collect()
            }
            Authentication::Jwt { .. } => Vec::new(),
        }
    }

    /// Whether metrics get a series per caller: only for the fixed set of API-key clients (a JWT's
    /// subject is open-ended, and each would be a series).
    pub fn counts_callers(&self) -> bool {
        matches!(self.authentication, Authentication::ApiKeys { .. })
    }
}

fn header_name(name: &str, field: &str) -> Result<String, RenderError> {
    let lower = name.to_ascii_lowercase();
    if lower.is_empty()
        || !lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(RenderError(format!(
            "{field}: {name:?} is not a header name"
        )));
    }
    Ok(lower)
}

pub fn plan(
    policies: &[&Object<ClientPolicySpec>],
    secrets: &BTreeMap<&str, &Secret>,
    gateway_name: Option<&str>,
) -> Result<Option<CallersPlan>, RenderError> {
    let policy = match policies {
        [] => return Ok(None),
        [only] => only,
        [first, second, ..] => {
            return Err(RenderError(format!(
            "SecurityPolicy {:?} and {:?}: one SecurityPolicy, on the Gateway, says who may call",
            first.metadata.name, second.metadata.name
        )))
        }
    };
    let at = format!("SecurityPolicy {:?}", policy.metadata.name);
    let spec = &policy.spec;
    for target in &spec.target_refs {
        if target.kind != "Gateway" || gateway_name.is_some_and(|g| g != target.name) {
            return Err(RenderError(format!(
                "{at}: spec.targetRefs: only the Gateway can be targeted (rules name models through the x-ai-eg-model header)"
            )));
        }
    }
    for (set, field) in [
        (spec.cors.is_some(), "cors"),
        (spec.basic_auth.is_some(), "basicAuth"),
        (spec.oidc.is_some(), "oidc"),
        (spec.ext_auth.is_some(), "extAuth"),
    ] {
        if set {
            return Err(RenderError(format!(
                "{at}: spec.{field} is not supported; use apiKeyAuth or jwt"
            )));
        }
    }
    let (authentication, caller_header) = match (&spec.api_key_auth, &spec.jwt) {
        (Some(_), Some(_)) => {
            return Err(RenderError(format!(
                "{at}: spec: apiKeyAuth and jwt together are not supported; choose one"
            )))
        }
        (None, None) => {
            return Err(RenderError(format!(
                "{at}: spec: apiKeyAuth or jwt is required to know who calls"
            )))
        }
        (Some(keys), None) => {
            let field = format!("{at}: spec.apiKeyAuth");
            let mut clients: Vec<(String, String)> = Vec::new();
            for reference in &keys.credential_refs {
                let secret = secrets.get(reference.name.as_str()).ok_or_else(|| {
                    RenderError(format!(
                        "{field}.credentialRefs: there is no Secret {:?} in the file",
                        reference.name
                    ))
                })?;
                for (client, key) in secret.entries()? {
                    let key = key.trim().to_owned();
                    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(RenderError(format!(
                            "Secret {:?}: {client}: a key is printable ASCII without spaces",
                            reference.name
                        )));
                    }
                    if clients
                        .iter()
                        .any(|(id, existing)| *id == client || *existing == key)
                    {
                        return Err(RenderError(format!(
                            "Secret {:?}: client {client:?} or its key is listed twice",
                            reference.name
                        )));
                    }
                    clients.push((client, key));
                }
            }
            if clients.is_empty() {
                return Err(RenderError(format!("{field}.credentialRefs: no keys")));
            }
            let mut key_headers = Vec::new();
            for source in &keys.extract_from {
                if !source.params.is_empty() || !source.cookies.is_empty() {
                    return Err(RenderError(format!("{field}.extractFrom: only headers are supported (keys in URLs end up in logs)")));
                }
                for name in &source.headers {
                    key_headers.push(header_name(name, &format!("{field}.extractFrom"))?);
                }
            }
            if key_headers.is_empty() {
                return Err(RenderError(format!("{field}.extractFrom: name the headers carrying the key (authorization, x-api-key)")));
            }
            let caller_header = keys.forward_client_id_header.as_deref().ok_or_else(|| {
                RenderError(format!(
                    "{field}.forwardClientIDHeader is required: the gateway names callers with it"
                ))
            })?;
            let caller_header =
                header_name(caller_header, &format!("{field}.forwardClientIDHeader"))?;
            (
                Authentication::ApiKeys {
                    clients,
                    key_headers,
                    hide: keys.sanitize.unwrap_or(false),
                },
                caller_header,
            )
        }
        (None, Some(jwt)) => {
            let field = format!("{at}: spec.jwt");
            if jwt.optional == Some(true) {
                return Err(RenderError(format!(
                    "{field}.optional: callers must prove who they are"
                )));
            }
            let mut providers = Vec::new();
            let mut caller_header = None;
            for (i, provider) in jwt.providers.iter().enumerate() {
                let at = format!("{field}.providers[{i}]");
                if provider.remote_jwks.is_some() || provider.extract_from.is_some() {
                    return Err(RenderError(format!(
                        "{at}: remoteJWKS and extractFrom are not supported; use localJWKS"
                    )));
                }
                let jwks = match &provider.local_jwks {
                    Some(local) if local.jwks_type == "Inline" => {
                        local.inline.clone().unwrap_or_default()
                    }
                    _ => {
                        return Err(RenderError(format!(
                            "{at}.localJWKS: an Inline JWKS is required"
                        )))
                    }
                };
                if serde_json::from_str::<serde_json::Value>(&jwks)
                    .ok()
                    .and_then(|v| v.get("keys").cloned())
                    .is_none()
                {
                    return Err(RenderError(format!(
                        "{at}.localJWKS.inline: not a JWKS document (no \"keys\")"
                    )));
                }
                let mut claim_to_headers = Vec::new();
                for mapping in &provider.claim_to_headers {
                    claim_to_headers.push((
                        header_name(&mapping.header, &format!("{at}.claimToHeaders"))?,
                        mapping.claim.clone(),
                    ));
                }
                let named = claim_to_headers.first().map(|(h, _)| h.clone());
                if caller_header.is_none() {
                    caller_header = named;
                }
                providers.push(JwtProviderPlan {
                    name: provider.name.clone(),
                    issuer: provider.issuer.clone(),
                    audiences: provider.audiences.clone(),
                    jwks,
                    claim_to_headers,
                });
            }
            let caller_header = caller_header.ok_or_else(|| {
                RenderError(format!(
                    "{field}.providers: a claimToHeaders entry (e.g. sub) must name the caller"
                ))
            })?;
            (Authentication::Jwt { providers }, caller_header)
        }
    };
    // Rules may read only what the caller cannot write: the model header (the routing stage's),
    // the caller header and a JWT's claim headers (the authentication's, a caller's copies removed).
    let mut trusted = vec![caller_header.clone(), "x-ai-eg-model".to_owned()];
    if let Authentication::Jwt { providers } = &authentication {
        for provider in providers {
            trusted.extend(provider.claim_to_headers.iter().map(|(h, _)| h.clone()));
        }
    }
    let authorization = match &spec.authorization {
        None => None,
        Some(rules) => {
            let field = format!("{at}: spec.authorization");
            let default_allows = match rules.default_action.as_deref() {
                None | Some("Deny") => false,
                Some("Allow") => true,
                Some(other) => {
                    return Err(RenderError(format!(
                        "{field}.defaultAction: {other:?} is not Allow or Deny"
                    )))
                }
            };
            let mut policies = Vec::new();
            for (i, rule) in rules.rules.iter().enumerate() {
                let at = format!("{field}.rules[{i}]");
                let expected = if default_allows { "Deny" } else { "Allow" };
                if rule.action != expected {
                    return Err(RenderError(format!(
                        "{at}.action: with defaultAction {} every rule must be {expected} (Envoy's RBAC filter takes one action)",
                        if default_allows { "Allow" } else { "Deny" }
                    )));
                }
                if rule.principal.client_cidrs.is_some()
                    || rule.principal.jwt.is_some()
                    || rule.principal.headers.is_empty()
                {
                    return Err(RenderError(format!("{at}.principal: only headers are supported (e.g. the caller's and x-ai-eg-model)")));
                }
                let mut headers = Vec::new();
                for header in &rule.principal.headers {
                    if header.values.is_empty() {
                        return Err(RenderError(format!(
                            "{at}.principal.headers: {:?} lists no values",
                            header.name
                        )));
                    }
                    let name = header_name(&header.name, &format!("{at}.principal.headers"))?;
                    if !trusted.contains(&name) {
                        return Err(RenderError(format!(
                            "{at}.principal.headers: {name:?} is a header the caller could send itself; rules read only {}",
                            trusted.join(", ")
                        )));
                    }
                    headers.push((name, header.values.clone()));
                }
                policies.push((
                    rule.name.clone().unwrap_or_else(|| format!("rule-{i}")),
                    headers,
                ));
            }
            Some(RbacPlan {
                allow_listed: !default_allows,
                policies,
            })
        }
    };
    Ok(Some(CallersPlan {
        caller_header,
        authentication,
        authorization,
    }))
}

/// The callers' keys, on the virtual host of the routes file, where a change is read again.
/// Envoy 1.40 takes the forwarding (the header naming the client) from the most specific
/// configuration alone, so it is repeated here with the key sources.
pub fn virtual_host_credentials(plan: &CallersPlan) -> Option<Map> {
    let Authentication::ApiKeys {
        clients,
        key_headers,
        hide,
    } = &plan.authentication
    else {
        return None;
    };
    let credentials: Seq = clients
        .iter()
        .map(|(client, key)| {
            Map::flow()
                .with("key", string(key))
                .with("client", string(client))
        })
        .collect();
    let per_route = Map::block()
        .with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuthPerRoute"),
        )
        .with("credentials", credentials)
        .extend(key_sources(key_headers, &plan.caller_header, *hide));
    Some(Map::block().with(
        "typed_per_filter_config",
        Map::block().with("envoy.filters.http.api_key_auth", per_route),
    ))
}

fn key_sources(key_headers: &[String], caller_header: &str, hide: bool) -> Map {
    let sources: Seq = key_headers
        .iter()
        .map(|header| Map::block().with("header", string(header)))
        .collect();
    Map::block().with("key_sources", sources).with(
        "forwarding",
        Map::flow()
            .with("header", string(caller_header))
            .with("hide_credentials", plain(hide)),
    )
}

/// The filters, in order, between the routing stage and the rate limits.
pub fn push_filters(filters: &mut Seq, plan: &CallersPlan) {
    match &plan.authentication {
        Authentication::ApiKeys {
            key_headers, hide, ..
        } => {
            filters
                .note("Callers' API keys (Authorization: Bearer is read without its prefix), checked against the keys")
                .note("of the routes file's virtual host; the client id goes on in")
                .note(format!(
                    "{}, which the routing stage removed from what the caller sent.",
                    plan.caller_header
                ));
            let config = Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth"),
                )
                .extend(key_sources(key_headers, &plan.caller_header, *hide));
            filters.push(
                Map::block()
                    .with("name", plain("envoy.filters.http.api_key_auth"))
                    .with("typed_config", config),
            );
        }
        Authentication::Jwt { providers } => {
            let mut by_name = Map::block();
            for provider in providers {
                let mut entry = Map::block();
                if let Some(issuer) = &provider.issuer {
                    entry.push("issuer", string(issuer));
                }
                if !provider.audiences.is_empty() {
                    let audiences: Seq = provider.audiences.iter().map(|a| string(a)).collect();
                    entry.push("audiences", audiences.styled(SeqStyle::Compact));
                }
                let claims: Seq = provider
                    .claim_to_headers
                    .iter()
                    .map(|(header, claim)| {
                        Map::flow()
                            .with("header_name", string(header))
                            .with("claim_name", string(claim))
                    })
                    .collect();
                let entry = entry
                    .with("local_jwks", Map::flow().with("inline_string", string(&provider.jwks)))
                    .with(
                        "from_headers",
                        plain("[ { name: authorization, value_prefix: \"Bearer \" }, { name: x-api-key } ]"),
                    )
                    .with("forward", plain(false))
                    .with("claim_to_headers", claims);
                by_name = by_name.with_quoted(&provider.name, entry);
            }
            let names: Vec<Node> = providers
                .iter()
                .map(|p| Map::flow().with("provider_name", string(&p.name)).into())
                .collect();
            let requirement: Node = match <[Node; 1]>::try_from(names) {
                Ok([one]) => one,
                Err(names) => Map::flow()
                    .with(
                        "requires_any",
                        Map::flow().with(
                            "requirements",
                            names.into_iter().collect::<Seq>().styled(SeqStyle::Flow),
                        ),
                    )
                    .into(),
            };
            let rule = Map::block()
                .with("match", plain("{ prefix: \"/\" }"))
                .with("requires", requirement);
            let config = Map::block()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"),
                )
                .with("providers", by_name)
                .with("rules", Seq::block().item(rule));
            filters
                .note("Callers' JWTs, from Authorization: Bearer or x-api-key (what OpenAI's and Anthropic's SDKs send).")
                .push(
                    Map::block()
                        .with("name", plain("envoy.filters.http.jwt_authn"))
                        .with("typed_config", config),
                );
        }
    }
    if let Some(rbac) = &plan.authorization {
        let config = Map::block().with(
            "\"@type\"",
            plain("type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"),
        );
        let config = match rules_by_caller(plan, rbac) {
            Some(by_caller) => config.extend(rbac_matcher(plan, rbac, &by_caller)),
            None => config.with("rules", rbac_policies(rbac)),
        };
        filters
            .note("The SecurityPolicy's authorization rules, over the caller's id and the model the routing stage set.")
            .push(
                Map::block()
                    .with("name", plain("envoy.filters.http.rbac"))
                    .with("typed_config", config),
            );
    }
}

/// The rules as an RBAC policy list, for rules over other headers than the caller and the model.
fn rbac_policies(rbac: &RbacPlan) -> Map {
    let mut policies = Map::block();
    for (name, headers) in &rbac.policies {
        let ids: Seq = headers
            .iter()
            .map(|(header, values)| {
                let alternatives: Seq = values
                    .iter()
                    .map(|v| {
                        Map::flow().with(
                            "header",
                            Map::flow()
                                .with("name", string(header))
                                .with("string_match", Map::flow().with("exact", string(v))),
                        )
                    })
                    .collect();
                Map::flow().with(
                    "or_ids",
                    Map::flow().with("ids", alternatives.styled(SeqStyle::Flow)),
                )
            })
            .collect();
        let principal = Map::flow().with(
            "and_ids",
            Map::flow().with("ids", ids.styled(SeqStyle::Flow)),
        );
        policies = policies.with_quoted(
            name,
            Map::block()
                .with("permissions", plain("[ { any: true } ]"))
                .with("principals", Seq::flow().item(principal)),
        );
    }
    Map::block()
        .with(
            "action",
            plain(if rbac.allow_listed { "ALLOW" } else { "DENY" }),
        )
        .with("policies", policies)
}

/// What each caller may do, when every rule names callers and at most the model (as model rules
/// do): by caller, `None` for every model, else the models named; the rules' union per caller.
type RulesByCaller<'a> = BTreeMap<&'a str, Option<BTreeSet<&'a str>>>;

fn rules_by_caller<'a>(plan: &'a CallersPlan, rbac: &'a RbacPlan) -> Option<RulesByCaller<'a>> {
    let mut by_caller: RulesByCaller<'a> = BTreeMap::new();
    for (_, headers) in &rbac.policies {
        let mut callers = None;
        let mut models = None;
        for (header, values) in headers {
            match header.as_str() {
                h if h == plan.caller_header && callers.is_none() => callers = Some(values),
                "x-ai-eg-model" if models.is_none() => models = Some(values),
                _ => return None,
            }
        }
        for caller in callers? {
            let entry = by_caller
                .entry(caller.as_str())
                .or_insert_with(|| Some(BTreeSet::new()));
            match (models, entry.as_mut()) {
                (None, _) => *entry = None,
                (Some(models), Some(allowed)) => allowed.extend(models.iter().map(String::as_str)),
                (Some(_), None) => {}
            }
        }
    }
    Some(by_caller)
}

/// The rules as Envoy's matcher tree: one lookup of the caller, then of the model, whatever the
/// number of callers and rules (a policy list is evaluated one policy after another).
fn rbac_matcher(plan: &CallersPlan, rbac: &RbacPlan, by_caller: &RulesByCaller<'_>) -> Map {
    let (matched, otherwise) = if rbac.allow_listed {
        ("ALLOW", "DENY")
    } else {
        ("DENY", "ALLOW")
    };
    let mut callers = Map::block();
    for (caller, models) in by_caller {
        let on_caller = match models {
            None => rbac_action(&format!("{caller}: every model"), matched),
            Some(models) => {
                let mut by_model = Map::block();
                for model in models {
                    by_model = by_model
                        .with_quoted(model, rbac_action(&format!("{caller}: {model}"), matched));
                }
                let tree = header_match_input("model", "x-ai-eg-model")
                    .with("exact_match_map", Map::block().with("map", by_model));
                Map::block().with(
                    "matcher",
                    Map::block().with("matcher_tree", tree).with(
                        "on_no_match",
                        rbac_action(&format!("{caller}: no rule for the model"), otherwise),
                    ),
                )
            }
        };
        callers = callers.with_quoted(caller, on_caller);
    }
    let tree = header_match_input("caller", &plan.caller_header)
        .with("exact_match_map", Map::block().with("map", callers));
    Map::block()
        .comment("One lookup of the caller, then of the model, however many callers and rules there are.")
        .with(
            "matcher",
            Map::block().with("matcher_tree", tree).with(
                "on_no_match",
                rbac_action("no rule for the caller", otherwise),
            ),
        )
}

fn rbac_action(name: &str, action: &str) -> Map {
    Map::block().with(
        "action",
        Map::block().with("name", string(name)).with(
            "typed_config",
            Map::flow()
                .with(
                    "\"@type\"",
                    plain("type.googleapis.com/envoy.config.rbac.v3.Action"),
                )
                .with("name", string(name))
                .with("action", plain(action)),
        ),
    )
}
