//! Server-side sessions: cookie → cache → store → [`UserSession`].
//!
//! [`crypto`] makes IDs, cookie MACs and sealed tokens; [`store`] keeps records (memory or
//! Redis); [`cache`] keeps hot sessions in memory, coherent across replicas through Redis
//! pub/sub ([`SessionManager::run_invalidation_listener`]); [`model`] is the data. The
//! manager ties them together for the proxy glue and the login flow.

pub(crate) mod cache;
pub(crate) mod crypto;
pub(crate) mod model;
pub(crate) mod redis_conn;
pub(crate) mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cookie::{Cookie, SameSite};
use futures_util::StreamExt;
use http::header;
use http::HeaderMap;
use pingora::http::{RequestHeader, ResponseHeader};
use smallvec::SmallVec;

pub use crate::cache::Tick;
pub use cache::SessionCache;
pub use crypto::{IdHash, Keys, SessionId};
pub use model::{unix_secs_nonzero, SessionRecord, SessionRef, Tokens, UserSession, Validated};
pub use store::{Store, StoreError, Update};

use crate::identity::{Claims, IdentityHeaders};
use crate::metrics::Metrics;

/// Cookie and lifetime settings, from `[session]`.
#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: String,
    /// `__Host-` + name, used over HTTPS.
    pub host_name: String,
    pub secure: bool,
    pub same_site: SameSite,
    pub domain: Option<String>,
    /// `false`: no `Max-Age` (a browser-session cookie, gone when the browser closes).
    pub persistent: bool,
    /// The cookie's `Path` (`/` unless `cookie_path` says otherwise).
    pub path: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Restart the idle TTL in the store at most this often per session.
    pub touch_interval: Duration,
}

/// What the admin API shows of a session: metadata, never tokens.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct SessionInfo {
    /// The store handle (hash of the cookie's ID): names the session, cannot be used as one.
    pub(crate) id: String,
    pub(crate) provider: String,
    /// The provider's `sub`: with `provider`, who the session belongs to.
    pub(crate) sub: String,
    /// The user as headers show it (`user_claim`).
    pub(crate) subject: String,
    pub(crate) email: Option<String>,
    /// Unix seconds.
    pub(crate) created_at: u64,
    /// Absolute expiry, unix seconds (store clock).
    pub(crate) expires_at: u64,
    pub(crate) access_token_expires_at: Option<u64>,
    pub(crate) refreshable: bool,
}

/// What the request's cookies say about its session (no `Debug`: it holds a session ID).
#[derive(Clone, PartialEq, Eq)]
pub enum CookieRead {
    Absent,
    One(SessionId),
    /// Two different sessions verified: unauthenticated (and logged).
    Conflict,
}

impl CookieRead {
    pub fn id(self) -> Option<SessionId> {
        match self {
            CookieRead::One(id) => Some(id),
            _ => None,
        }
    }
}

/// A held refresh lock; give it back with [`SessionManager::unlock_refresh`].
pub(crate) struct RefreshLock {
    key: String,
    token: String,
}

pub struct SessionManager {
    pub(crate) store: Store,
    keys: Keys,
    /// Shared by every generation of the config (reloads keep it, and its coherence).
    pub cache: Arc<SessionCache>,
    pub(crate) cookie: CookieSettings,
    headers: IdentityHeaders,
    metrics: Arc<Metrics>,
    /// This manager's number: what the sessions it loads carry (see `UserSession::epoch`).
    epoch: u64,
    /// Sessions it loads keep their sealed tokens (see [`Self::holding_tokens`]).
    hold_tokens: bool,
    /// The other claims sessions it loads keep (see [`Self::keeping_claims`]).
    keep_claims: crate::claimmap::ClaimsRead,
    /// Pre-resolved label children: no label hashing on the hot path.
    cache_hits: prometheus::IntCounter,
    cache_misses: prometheus::IntCounter,
}

/// Numbers session managers (one per config generation).
static EPOCHS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_epoch() -> u64 {
    EPOCHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Store keys. The `{…}` hash tag puts a session's record and its refresh lock in one Redis
/// Cluster slot; index keys name a hash of the subject or `sid`, never the value itself.
fn session_key(hash: &IdHash) -> String {
    format!("s:{{{}}}", hash.hex())
}

fn refresh_lock_key(hash: &IdHash) -> String {
    format!("s:{{{}}}:refresh", hash.hex())
}

/// A user's sessions: the provider and its `sub`, the one pair that names a user for good
/// (a `user_claim` such as `email` can change, and two providers can share its values).
fn user_index(provider: &str, sub: &str) -> String {
    let joined = [provider.as_bytes(), b"\0", sub.as_bytes()].concat();
    format!("u2:{{{}}}", IdHash(crate::crypto::sha256(&joined)).hex())
}

/// The index of records written before (provider, `sub`) was kept: by the header subject.
/// Read only by revocation, until such records have expired (`absolute_timeout`).
fn legacy_subject_index(subject: &str) -> String {
    format!(
        "u:{{{}}}",
        IdHash(crate::crypto::sha256(subject.as_bytes())).hex()
    )
}

fn sid_index(provider: &str, sid: &str) -> String {
    let joined = [provider.as_bytes(), b"\0", sid.as_bytes()].concat();
    format!("sid:{{{}}}", IdHash(crate::crypto::sha256(&joined)).hex())
}

/// Records written before the gateway kept only verified emails (v2) may hold an address
/// the provider did not verify: it is dropped here, so nothing downstream ever sees it.
fn upgrade_claims(c: &mut Claims) {
    if c.email_verified != Some(true) && c.email().is_some() {
        c.text = c.text.with(|p| p.email = None);
    }
}

impl SessionManager {
    pub fn new(
        store: Store,
        keys: Keys,
        cache: impl Into<Arc<SessionCache>>,
        cookie: CookieSettings,
        headers: IdentityHeaders,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            keys,
            cache: cache.into(),
            cookie,
            headers,
            epoch: next_epoch(),
            hold_tokens: true,
            keep_claims: crate::claimmap::ClaimsRead::All,
            cache_hits: metrics.session_cache.with_label_values(&["hit"]),
            cache_misses: metrics.session_cache.with_label_values(&["miss"]),
            metrics,
        }
    }

    /// Whether the sessions this manager loads (and caches) keep their sealed tokens. They
    /// are half of a cached session's memory and only routes that send them upstream on
    /// every request need them at hand; refresh and logout read them from the store
    /// ([`Self::reload`]).
    pub fn holding_tokens(mut self, hold: bool) -> Self {
        self.hold_tokens = hold;
        self.renumber()
    }

    /// A new number (see `UserSession::epoch`): copies made with other settings (kept in the
    /// cache every generation shares) are never served as this manager's.
    fn renumber(mut self) -> Self {
        self.epoch = next_epoch();
        self
    }

    /// Which of their other claims the sessions this manager loads (and caches) keep: those
    /// the config's rules and headers read (`Config::claims_read`). A refresh reads the whole
    /// record from the store ([`Self::reload`]), so nothing stored is lost.
    pub fn keeping_claims(mut self, read: crate::claimmap::ClaimsRead) -> Self {
        self.keep_claims = read;
        self.renumber()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Header that carries the access token on routes with `pass_access_token`.
    pub(crate) fn access_token_header(&self) -> &crate::out_header::OutName {
        &self.headers.access_token
    }

    /// The session cookie's name for a request: the `__Host-` name over HTTPS (when the
    /// cookie can carry that prefix: Secure, Path=/ and no Domain; browsers honour it only
    /// over HTTPS), the plain name otherwise. The same rule names the cookie
    /// we set, so a browser never holds both for one site. (A `cookie_path` other than `/`
    /// gives up the prefix as `cookie_domain` does: a browser would reject the cookie.)
    pub(crate) fn cookie_name(&self, https: bool) -> &str {
        if https && self.cookie.secure && self.cookie.domain.is_none() && self.cookie.path == "/" {
            &self.cookie.host_name
        } else {
            &self.cookie.name
        }
    }

    /// The session ID from the request's cookies. Only the one name [`Self::cookie_name`]
    /// gives is read: over HTTPS a plain-named cookie can have been planted by a sibling
    /// subdomain or over plain HTTP, while `__Host-` cookies cannot. Forged cookies cost a MAC
    /// check, never a store round trip; two cookies that both verify as different sessions
    /// are one planted beside the other, so neither is believed.
    pub fn read_cookie(&self, headers: &HeaderMap, https: bool) -> CookieRead {
        let name = self.cookie_name(https);
        let mut found: Option<SessionId> = None;
        for id in self.verified_cookies(headers, name) {
            match &found {
                Some(prev) if *prev != id => {
                    tracing::warn!(
                        cookie = name,
                        "two different valid session cookies in one request: neither is used"
                    );
                    return CookieRead::Conflict;
                }
                _ => found = Some(id),
            }
        }
        found.map_or(CookieRead::Absent, CookieRead::One)
    }

    /// Every different session the request's cookies name under [`Self::cookie_name`] and
    /// that verifies, in order. Sign-out ends them all: where [`Self::read_cookie`] believes
    /// none of two (one was planted beside the other), a sign-out that ended neither would
    /// look done while the user's session lives on.
    pub(crate) fn every_verified_cookie(&self, headers: &HeaderMap, https: bool) -> Vec<SessionId> {
        let mut ids: Vec<SessionId> = Vec::new();
        for id in self.verified_cookies(headers, self.cookie_name(https)) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The session IDs of the cookies named `name` whose MAC verifies.
    fn verified_cookies<'a>(
        &'a self,
        headers: &'a HeaderMap,
        name: &'a str,
    ) -> impl Iterator<Item = SessionId> + 'a {
        headers
            .get_all(header::COOKIE)
            .into_iter()
            .filter_map(|h| h.to_str().ok())
            // As `Cookie::split_parse` splits and trims, but only a piece that starts with our
            // name is parsed: a browser sends many cookies and one is ours. (`to_str` admits
            // no whitespace but space and tab, so a name the parser would find after trimming
            // is at the start of the trimmed piece.)
            .flat_map(|s| s.split(';').map(str::trim))
            .filter(move |piece| piece.starts_with(name))
            .filter_map(|piece| Cookie::parse(piece).ok())
            .filter(move |c| c.name() == name)
            .filter_map(|c| self.keys.open_cookie(c.value()))
    }

    /// Whether `name` is one of the gateway's cookies (session or login transaction), in any
    /// ASCII case: browsers match the `__Host-` prefix case-insensitively.
    ///
    /// Compared as bytes: the name may come from an upstream's `Set-Cookie` and hold any
    /// UTF-8, and a `str` slice that cuts a character would panic.
    fn is_our_cookie(&self, name: &str) -> bool {
        let name = name.as_bytes();
        let bare = match name.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case(b"__Host-") => &name[7..],
            _ => name,
        };
        let ours = self.cookie.name.as_bytes();
        match bare.get(..ours.len()) {
            Some(head) if head.eq_ignore_ascii_case(ours) => {
                let rest = &bare[ours.len()..];
                rest.is_empty()
                    || rest
                        .get(..4)
                        .is_some_and(|t| t.eq_ignore_ascii_case(b"_tx_"))
            }
            _ => false,
        }
    }

    /// Drop an upstream's `Set-Cookie` for one of the gateway's cookie names: an app must not
    /// be able to plant or clear the user's session.
    pub(crate) fn drop_set_cookie(&self, resp: &mut ResponseHeader) -> pingora::Result<usize> {
        let ours = |v: &http::HeaderValue| {
            let name = v
                .as_bytes()
                .split(|b| *b == b'=')
                .next()
                .and_then(|n| std::str::from_utf8(n).ok())
                .unwrap_or("")
                .trim();
            self.is_our_cookie(name)
        };
        let dropped = resp
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| ours(v))
            .count();
        if dropped == 0 {
            return Ok(0);
        }
        let kept: Vec<http::HeaderValue> = resp
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !ours(v))
            .cloned()
            .collect();
        resp.remove_header(&header::SET_COOKIE);
        for v in kept {
            resp.append_header(header::SET_COOKIE, v)?;
        }
        Ok(dropped)
    }

    /// Prefix of login-transaction cookie names (one cookie per pending login).
    pub(crate) fn tx_cookie_prefix(&self) -> String {
        format!("{}_tx_", self.cookie.name)
    }

    /// The request's cookies without the gateway's, joined as one `Cookie` value.
    pub(crate) fn foreign_cookies(&self, headers: &HeaderMap) -> String {
        self.sift_cookies(headers).0.join("; ")
    }

    /// One pass over the `Cookie` headers: the pieces that are not the gateway's (on the
    /// stack: a browser sends a handful), and whether anything has to go: one of ours, or a
    /// header that is not text (we cannot tell what it holds, so it does not go upstream).
    fn sift_cookies<'h>(&self, headers: &'h HeaderMap) -> (SmallVec<[&'h str; 16]>, bool) {
        let mut kept = SmallVec::new();
        let mut dropped = false;
        for h in headers.get_all(header::COOKIE) {
            let Ok(s) = h.to_str() else {
                dropped = true;
                continue;
            };
            for piece in s.split(';').map(str::trim) {
                if self.is_our_cookie(piece.split('=').next().unwrap_or("").trim()) {
                    dropped = true;
                } else if !piece.is_empty() {
                    kept.push(piece);
                }
            }
        }
        (kept, dropped)
    }

    /// Remove the gateway's cookies (session and login transactions) from what the upstream
    /// receives; other cookies stay.
    pub fn strip_cookie(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        // Every request with cookies passes here: the header is rewritten only when one of
        // ours (or an unreadable header) has to go.
        let kept = match self.sift_cookies(&req.headers) {
            (_, false) => return Ok(()),
            // `join` sizes its buffer exactly: the header value takes it as is.
            (kept, true) => kept.join("; "),
        };
        req.remove_header(&header::COOKIE);
        if !kept.is_empty() {
            req.insert_header(header::COOKIE, kept)?;
        }
        Ok(())
    }

    /// Load a session: cache first, then the store (restarting the idle timeout at most once
    /// per touch interval).
    pub async fn load(&self, id: &SessionId) -> Result<Option<SessionRef>, StoreError> {
        let hash = id.hash();
        if let Some(s) = self.cache.get(&hash).filter(|s| s.epoch == self.epoch) {
            self.cache_hits.inc();
            return Ok(Some(s));
        }
        self.cache_misses.inc();
        // A burst of requests for one cold session reads it once; a load of the previous
        // config's manager (joined just after a reload) does not count.
        match self.cache.load(&hash, || self.load_missed(hash)).await {
            Ok(Some(s)) if s.epoch != self.epoch => self.load_missed(hash).await,
            other => other,
        }
    }

    /// A cache miss: read the store (the store only confirms a copy held here that is still
    /// current) and cache what it says.
    async fn load_missed(&self, hash: IdHash) -> Result<Option<SessionRef>, StoreError> {
        let generation = self.cache.generation();
        let known = self
            .cache
            .candidate(&hash)
            .filter(|k| k.epoch == self.epoch);
        let touch = Some(self.cookie.touch_interval);
        let read = self.read(&hash, touch, known.as_ref(), false);
        let Some(session) = read.await? else {
            // Gone from the store: so goes any copy here.
            if known.is_some() {
                self.cache.invalidate(&hash);
            }
            return Ok(None);
        };
        match known {
            // Confirmed unchanged: the copy serves again, nothing decoded or inserted.
            Some(k) if k.same(&session) => session.validated.renew(),
            _ => self.cache.insert(session.clone(), generation),
        }
        Ok(Some(session))
    }

    /// The session as the store has it now, tokens and every claim included, bypassing the
    /// cache and leaving the idle timer alone: what a refresh decides on (and writes back).
    pub(crate) async fn reload(&self, hash: &IdHash) -> Result<Option<SessionRef>, StoreError> {
        self.read(hash, None, None, true).await
    }

    /// Read the session from the store. With `known`, a copy held here, the store only
    /// confirms it when the record is unchanged, and `known` itself is returned. Unless
    /// `whole`, the copy is the one this manager caches ([`SessionRecord::trim_for_cache`]).
    async fn read(
        &self,
        hash: &IdHash,
        touch: Option<Duration>,
        known: Option<&SessionRef>,
        whole: bool,
    ) -> Result<Option<SessionRef>, StoreError> {
        let started = Instant::now();
        // Before the store is asked: it counts the time left when it answers, later than
        // this, so a deadline counted from here is never late (a slow reply or the decoding
        // cannot stretch it past the session's end).
        let asked = Tick::now();
        let checked = self
            .store
            .session_check(
                &session_key(hash),
                self.cookie.idle_timeout,
                touch,
                known.map(|k| k.rev),
            )
            .await;
        self.observe_store(started, checked.is_ok());
        let stored = match checked? {
            None => return Ok(None),
            Some(store::Checked::Unchanged) => return Ok(known.cloned()),
            Some(store::Checked::Changed(s)) => s,
        };
        let mut record: SessionRecord = match serde_json::from_slice(&stored.record) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable session record; treating as signed out");
                return Ok(None);
            }
        };
        upgrade_claims(&mut record.claims);
        if !whole {
            // A record stored before users that headers would change were refused at sign-in
            // (`identity::is_sendable`): not served (the user signs in again, and is refused
            // there). Sign-out and refresh read it whole, so it can still be ended.
            if !crate::identity::is_sendable(record.claims.subject()) {
                tracing::warn!(sub = %record.claims.sub(), "a stored session whose user cannot be sent as a header; treating as signed out");
                return Ok(None);
            }
            record.trim_for_cache(self.hold_tokens, &self.keep_claims);
        }
        let copy = Arc::new(UserSession {
            headers: self.headers.values(&record.provider, &record.claims),
            record,
            validated: Validated::now(),
            rev: stored.rev,
            // Saturating, on the clock the cache judges it by; less the millisecond Redis
            // floors its clock to.
            deadline: asked.after(stored.remaining.saturating_sub(Duration::from_millis(1))),
            epoch: self.epoch,
            whole,
            hash_tail: hash.halves().1,
        });
        Ok(Some(SessionRef { hash: *hash, copy }))
    }

    fn observe_store(&self, started: Instant, ok: bool) {
        if self.store.is_redis() {
            self.metrics
                .redis_duration
                .observe(started.elapsed().as_secs_f64());
            if !ok {
                self.metrics.redis_errors.inc();
            }
        }
    }

    fn seal_record(
        &self,
        hash: &IdHash,
        base: SessionRecord,
        tokens: &Tokens,
    ) -> Result<Vec<u8>, StoreError> {
        let plain = serde_json::to_vec(tokens).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let record = SessionRecord {
            access_expires_at: tokens.access_token_expires_at.map(unix_secs_nonzero),
            refreshable: tokens.refresh_token.is_some(),
            tokens: self.keys.seal(hash, &plain).into(),
            ..base
        };
        serde_json::to_vec(&record).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// Create a session with a fresh ID (never one the client chose), indexed by subject and
    /// provider `sid`. Returns the cookie value.
    pub async fn create(
        &self,
        provider: &str,
        claims: Claims,
        sid: Option<String>,
        tokens: &Tokens,
    ) -> Result<String, StoreError> {
        let id = SessionId::generate();
        let hash = id.hash();
        let now = crate::crypto::now_unix();
        let user_key = user_index(provider, claims.sub());
        let base = SessionRecord {
            v: 3,
            provider: provider.into(),
            claims,
            created_at: now,
            expires_at: now + self.cookie.absolute_timeout.as_secs(),
            sid: sid.map(Into::into),
            access_expires_at: None,
            refreshable: false,
            tokens: Box::default(),
        };
        let sid_key = base.sid.as_deref().map(|sid| sid_index(provider, sid));
        let raw = self.seal_record(&hash, base, tokens)?;
        let key = session_key(&hash);
        let started = Instant::now();
        let deadline = self
            .store
            .session_create(
                &key,
                &raw,
                self.cookie.idle_timeout,
                self.cookie.absolute_timeout,
            )
            .await;
        self.observe_store(started, deadline.is_ok());
        let deadline = deadline?;
        // A session missing from its indexes could escape revocation: no index, no session.
        let member = hash.hex();
        let mut indexed = self.store.index_add(&user_key, &member, deadline).await;
        if let (Ok(()), Some(sid_key)) = (&indexed, &sid_key) {
            indexed = self.store.index_add(sid_key, &member, deadline).await;
        }
        if let Err(e) = indexed {
            let _ = self.store.delete(&key).await;
            return Err(e);
        }
        Ok(self.keys.cookie_value(&id))
    }

    /// Store refreshed tokens and identity, if nobody changed the session since `s` was read.
    /// On success every replica drops its cached copy.
    pub(crate) async fn update(
        &self,
        s: &SessionRef,
        claims: Claims,
        tokens: &Tokens,
    ) -> Result<Update, StoreError> {
        if !s.whole {
            // A cache's copy lacks what the request path does not read (claims, `sid`):
            // written back, that would be lost for good.
            return Err(StoreError::Corrupt(
                "a trimmed session copy cannot be written back".into(),
            ));
        }
        let base = SessionRecord {
            claims,
            ..s.record.clone()
        };
        let raw = self.seal_record(&s.hash, base, tokens)?;
        let outcome = self
            .store
            .session_update(&session_key(&s.hash), s.rev, &raw)
            .await?;
        if let Update::Done(_) = outcome {
            self.cache.invalidate(&s.hash);
            self.store.publish_invalidation(&s.hash.hex()).await?;
        }
        Ok(outcome)
    }

    /// The store's time (unix seconds), asked of the store now, or from the last measured
    /// offset when it cannot answer: for times written into records every replica reads.
    pub(crate) async fn store_now(&self) -> u64 {
        match self.store.sync_clock().await {
            Ok(t) => t,
            Err(_) => self.store.now_unix(),
        }
    }

    /// The tokens a loaded session holds, decrypted: on the request path, for routes that
    /// send them upstream, and from [`Self::reload`]'s copies. Every record holds sealed
    /// tokens; only a copy loaded without them is empty.
    pub(crate) fn tokens(&self, s: &SessionRef) -> Option<Tokens> {
        debug_assert!(
            !s.record.tokens.is_empty(),
            "tokens asked of a session copy loaded without them"
        );
        let plain = self.keys.open(&s.hash, &s.record.tokens)?;
        serde_json::from_slice(&plain).ok()
    }

    /// End a session everywhere: delete it, drop it from this cache, tell the other replicas.
    /// Index entries are left to be pruned when read.
    pub(crate) async fn destroy(&self, hash: &IdHash) -> Result<(), StoreError> {
        self.cache.invalidate(hash);
        self.store.delete(&session_key(hash)).await?;
        self.store.publish_invalidation(&hash.hex()).await
    }

    /// Hold the cross-replica refresh lock for a session; `None` if another holder has it.
    pub(crate) async fn lock_refresh(
        &self,
        hash: &IdHash,
        ttl: Duration,
    ) -> Result<Option<RefreshLock>, StoreError> {
        let token = crate::crypto::random_token();
        let key = refresh_lock_key(hash);
        Ok(self
            .store
            .lock(&key, &token, ttl)
            .await?
            .then_some(RefreshLock { key, token }))
    }

    pub(crate) async fn unlock_refresh(&self, lock: RefreshLock) {
        if let Err(e) = self.store.unlock(&lock.key, &lock.token).await {
            // It expires by itself; the next refresher waits at most its TTL.
            tracing::warn!(error = %e, "could not release a refresh lock");
        }
    }

    /// Sessions in an index, as live metadata; members whose record is gone are pruned.
    async fn indexed(&self, index: &str) -> Result<Vec<(IdHash, SessionInfo)>, StoreError> {
        let mut out = Vec::new();
        for member in self.store.index_members(index).await? {
            let Some(hash) = parse_hex32(&member).map(IdHash) else {
                self.store.index_remove(index, &member).await?;
                continue;
            };
            let stored = self
                .store
                .session_load(&session_key(&hash), self.cookie.idle_timeout, None)
                .await?;
            let Some(stored) = stored else {
                self.store.index_remove(index, &member).await?;
                continue;
            };
            let Ok(r) = serde_json::from_slice::<SessionRecord>(&stored.record) else {
                continue;
            };
            out.push((
                hash,
                SessionInfo {
                    id: member,
                    provider: r.provider.into(),
                    sub: r.claims.known_sub().to_string(),
                    subject: r.claims.subject().into(),
                    email: r.claims.email().map(Into::into),
                    created_at: r.created_at,
                    expires_at: stored.deadline_unix_ms / 1000,
                    access_token_expires_at: r.access_expires_at.map(std::num::NonZeroU64::get),
                    refreshable: r.refreshable,
                },
            ));
        }
        Ok(out)
    }

    /// A user's live sessions at one provider.
    pub(crate) async fn list_user(
        &self,
        provider: &str,
        sub: &str,
    ) -> Result<Vec<SessionInfo>, StoreError> {
        let mut out: Vec<SessionInfo> = self
            .indexed(&user_index(provider, sub))
            .await?
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        for (_, i) in self.indexed(&legacy_subject_index(sub)).await? {
            if i.provider == provider && i.sub == sub && !out.iter().any(|o| o.id == i.id) {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// End every session of a user (the provider and its `sub`). Returns how many ended.
    pub(crate) async fn revoke_user(&self, provider: &str, sub: &str) -> Result<usize, StoreError> {
        let mine = |i: &SessionInfo| i.provider == provider && i.sub == sub;
        Ok(self
            .revoke_indexed(&user_index(provider, sub), mine)
            .await?
            + self
                .revoke_indexed(&legacy_subject_index(sub), mine)
                .await?)
    }

    /// End every session a provider session (`sid`) created.
    pub(crate) async fn revoke_sid(&self, provider: &str, sid: &str) -> Result<usize, StoreError> {
        self.revoke_indexed(&sid_index(provider, sid), |i| i.provider == provider)
            .await
    }

    async fn revoke_indexed(
        &self,
        index: &str,
        mine: impl Fn(&SessionInfo) -> bool,
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for (hash, info) in self.indexed(index).await? {
            if !mine(&info) {
                continue;
            }
            self.destroy(&hash).await?;
            self.store.index_remove(index, &info.id).await?;
            n += 1;
        }
        Ok(n)
    }

    /// End one session by its store handle (the `id` of [`SessionInfo`]). `false`: no such
    /// session.
    pub(crate) async fn revoke_handle(&self, handle: &str) -> Result<bool, StoreError> {
        let Some(hash) = parse_hex32(handle).map(IdHash) else {
            return Ok(false);
        };
        if self.reload(&hash).await?.is_none() {
            return Ok(false);
        }
        self.destroy(&hash).await?;
        Ok(true)
    }

    /// `Set-Cookie` value for a new session.
    /// Persistent: it lasts as long as the session can (`Max-Age` = the absolute timeout);
    /// otherwise a browser-session cookie (no `Max-Age`, no `Expires`) while the session
    /// itself still ends at its timeouts in the store.
    pub(crate) fn set_cookie(&self, value: &str, https: bool) -> String {
        let b = self.cookie_builder(value.to_string(), https);
        let b = if self.cookie.persistent {
            b.max_age(cookie::time::Duration::seconds(
                self.cookie.absolute_timeout.as_secs() as i64,
            ))
        } else {
            b
        };
        b.build().to_string()
    }

    /// `Set-Cookie` value that deletes the session cookie.
    pub(crate) fn clear_cookie(&self, https: bool) -> String {
        self.cookie_builder(String::new(), https)
            .max_age(cookie::time::Duration::ZERO)
            .build()
            .to_string()
    }

    fn cookie_builder(&self, value: String, https: bool) -> cookie::CookieBuilder<'static> {
        let mut b = Cookie::build((self.cookie_name(https).to_string(), value))
            .path(self.cookie.path.clone())
            .http_only(true)
            .secure(self.cookie.secure)
            .same_site(self.cookie.same_site);
        if let Some(d) = &self.cookie.domain {
            b = b.domain(d.clone());
        }
        b
    }

    /// Keep the cache coherent with other replicas (Redis only): subscribe to invalidations,
    /// trust the cache only while subscribed, reconnect with backoff. Runs until dropped.
    pub(crate) async fn run_invalidation_listener(self: Arc<Self>) {
        let Store::Redis(redis) = &self.store else {
            return;
        };
        let channel = redis.channel();
        let mut backoff = Duration::from_millis(100);
        loop {
            match redis.conn.subscriber(redis.timeout).await {
                Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                    Ok(()) => {
                        backoff = Duration::from_millis(100);
                        let epoch = redis.conn.epoch();
                        self.cache.set_coherent(true);
                        tracing::info!("session cache coherent: invalidation channel subscribed");
                        let mut stream = pubsub.on_message();
                        let mut check = tokio::time::interval(Duration::from_millis(500));
                        loop {
                            tokio::select! {
                                msg = stream.next() => {
                                    let Some(msg) = msg else { break };
                                    if let Ok(hex) = msg.get_payload::<String>() {
                                        if let Some(hash) = parse_hex32(&hex) {
                                            self.cache.invalidate(&IdHash(hash));
                                        }
                                    }
                                }
                                _ = check.tick() => {
                                    // A Sentinel failover moved the primary: messages now
                                    // flow there.
                                    if redis.conn.epoch() != epoch {
                                        break;
                                    }
                                }
                            }
                        }
                        self.cache.set_coherent(false);
                        tracing::warn!(
                            "invalidation channel lost: session cache bypassed until it is back"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to invalidations"),
                },
                Err(e) => {
                    self.cache.set_coherent(false);
                    tracing::debug!(error = %e, "redis pub/sub unavailable");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_verified_emails_lose_unverified_ones() {
        // A v2 record as the previous release wrote it: the address stored whatever the
        // provider said about it.
        let raw = r#"{"subject":"alice","email":"ceo@corp.example","email_verified":false,"name":null,"preferred_username":null,"groups":[]}"#;
        for (verdict, kept) in [("false", false), ("null", false), ("true", true)] {
            let mut c: Claims =
                serde_json::from_str(&raw.replace("false,\"name", &format!("{verdict},\"name")))
                    .unwrap();
            assert_eq!(c.sub(), "", "no sub in v2 records");
            upgrade_claims(&mut c);
            assert_eq!(c.email().is_some(), kept, "email_verified {verdict}");
        }
        let mut c: Claims = serde_json::from_str(
            r#"{"subject":"alice","email":"a@x","name":null,"preferred_username":null,"groups":[]}"#,
        )
        .unwrap();
        upgrade_claims(&mut c);
        assert_eq!(c.email(), None, "no verdict at all");
    }

    fn manager() -> SessionManager {
        manager_with(|_| {})
    }

    fn manager_with(f: impl FnOnce(&mut CookieSettings)) -> SessionManager {
        let mut cookie = CookieSettings {
            name: "authgate_session".into(),
            host_name: "__Host-authgate_session".into(),
            secure: true,
            same_site: SameSite::Lax,
            domain: None,
            persistent: true,
            path: "/".into(),
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(7200),
            touch_interval: Duration::from_secs(60),
        };
        f(&mut cookie);
        SessionManager::new(
            Store::memory(),
            Keys::derive(&[7u8; 32]),
            SessionCache::new(Duration::from_secs(30), 1000, true),
            cookie,
            IdentityHeaders::default(),
            Arc::new(Metrics::new()),
        )
    }

    fn cookies(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn one_cookie_name_per_scheme_and_no_conflicts() {
        let m = manager();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let (ca, cb) = (m.keys().cookie_value(&a), m.keys().cookie_value(&b));
        let read = |https, v: &[&str]| m.read_cookie(&cookies(v), https);
        let plain = |c: &str| format!("authgate_session={c}");
        let host = |c: &str| format!("__Host-authgate_session={c}");
        assert!(read(false, &[&plain(&ca)]) == CookieRead::One(a.clone()));
        assert!(read(true, &[&host(&ca)]) == CookieRead::One(a.clone()));
        // Over HTTPS a plain-named cookie (plantable from a sibling or over HTTP) is not read,
        // and over HTTP the __Host- one is not either.
        assert!(read(true, &[&plain(&ca)]) == CookieRead::Absent);
        assert!(read(false, &[&host(&ca)]) == CookieRead::Absent);
        assert!(read(true, &[&plain(&cb), &host(&ca)]) == CookieRead::One(a.clone()));
        // Two different valid sessions: neither; the same twice, or beside a forgery: fine.
        let both = format!("{}; {}", host(&ca), host(&cb));
        assert!(read(true, &[&both]) == CookieRead::Conflict);
        assert!(read(true, &[&host(&cb), &host(&ca)]) == CookieRead::Conflict);
        assert!(
            read(true, &[&format!("{}; {}", host(&ca), host(&ca))]) == CookieRead::One(a.clone())
        );
        assert!(
            read(true, &[&format!("{}; {}", host("v1.forged"), host(&ca))])
                == CookieRead::One(a.clone())
        );
        // Other spellings of the name are not ours.
        for name in [
            "__host-authgate_session",
            "AUTHGATE_SESSION",
            "authgate_session ",
            "x__Host-authgate_session",
        ] {
            assert!(
                read(true, &[&format!("{name}={ca}")]) == CookieRead::Absent,
                "{name}"
            );
        }
    }

    #[test]
    fn gateway_cookies_never_leave_and_are_never_set_by_upstreams() {
        let m = manager();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header(
            "cookie",
            "a=1; authgate_session=x; __Host-authgate_session=y",
        )
        .unwrap();
        req.append_header(
            "cookie",
            "authgate_session_tx_abc=z; __HOST-authgate_session_TX_1=q; b=2",
        )
        .unwrap();
        m.strip_cookie(&mut req).unwrap();
        assert_eq!(
            req.headers.get_all("cookie").iter().collect::<Vec<_>>(),
            vec!["a=1; b=2"]
        );
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for v in [
            "app=1; Path=/",
            "authgate_session=evil; Path=/",
            "__Host-authgate_session=evil; Secure; Path=/",
            "__host-AUTHGATE_SESSION=evil",
            " authgate_session_tx_1=evil",
            "authgate_sessionx=fine",
        ] {
            resp.append_header(header::SET_COOKIE, v).unwrap();
        }
        assert_eq!(m.drop_set_cookie(&mut resp).unwrap(), 4);
        let kept: Vec<_> = resp.headers.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(kept, vec!["app=1; Path=/", "authgate_sessionx=fine"]);
    }

    proptest::proptest! {
        /// Arbitrary cookie headers never panic the reader, and never yield a session unless
        /// they hold a validly MACed value under the one accepted name.
        #[test]
        fn cookie_reader_never_invents_a_session(
            raw in proptest::collection::vec("[ -~]{0,80}", 0..4),
            https: bool,
        ) {
            let m = manager();
            let mut h = HeaderMap::new();
            for v in &raw {
                if let Ok(v) = v.parse() {
                    h.append(header::COOKIE, v);
                }
            }
            proptest::prop_assert!(m.read_cookie(&h, https).id().is_none());
            let _ = m.foreign_cookies(&h);
        }

        /// A valid cookie surrounded by arbitrary other cookies is read as itself; the
        /// upstream's copy of the header never contains it.
        #[test]
        fn valid_cookie_among_noise(
            before in "[a-z]{1,8}=[a-z0-9]{0,12}",
            after in "[a-z]{1,8}=[a-z0-9]{0,12}",
        ) {
            let m = manager();
            let id = SessionId::generate();
            let v = format!("{before}; __Host-authgate_session={}; {after}", m.keys().cookie_value(&id));
            let h = cookies(&[&v]);
            proptest::prop_assert!(m.read_cookie(&h, true) == CookieRead::One(id));
            proptest::prop_assert!(!m.foreign_cookies(&h).contains("authgate_session"));
        }
    }

    #[test]
    fn cookie_names_in_any_utf8_never_panic_and_only_ours_are_ours() {
        let m = manager();
        // Multi-byte characters across the `__Host-` cut (byte 7), the name's end and `_tx_`.
        for name in [
            "abcdefé",
            "abcdef\u{10348}x",
            "__Host-é",
            "__Hosté",
            "é",
            "",
            "authgate_sessioné",
            "authgate_session_té",
            "authgate_sessio\u{e9}",
            "__Host-authgate_sessioné",
        ] {
            assert!(!m.is_our_cookie(name), "{name}");
        }
        for name in [
            "authgate_session",
            "AUTHGATE_SESSION",
            "__host-authgate_session",
            "__Host-authgate_session_tx_é",
            "authgate_session_TX_1",
        ] {
            assert!(m.is_our_cookie(name), "{name}");
        }
        // An upstream's Set-Cookie with such a name is kept, not a panic.
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for v in [
            "abcdefé=1",
            "__Hosté=2",
            "authgate_sessioné=3",
            "__Host-authgate_session_tx_é=4",
        ] {
            resp.append_header(
                header::SET_COOKIE,
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(m.drop_set_cookie(&mut resp).unwrap(), 1);
        assert_eq!(resp.headers.get_all(header::SET_COOKIE).iter().count(), 3);
    }

    proptest::proptest! {
        /// Any UTF-8 name, from an upstream or a client: an answer, never a panic.
        #[test]
        fn is_our_cookie_takes_any_utf8(name in "\\PC{0,24}") {
            let m = manager();
            let _ = m.is_our_cookie(&name);
            let _ = m.is_our_cookie(&format!("__Host-{name}"));
            let _ = m.is_our_cookie(&format!("authgate_session{name}"));
        }
    }

    #[test]
    fn stripping_keeps_every_other_cookie_in_every_layout() {
        let m = manager();
        let strip = |lines: &[&[u8]]| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            for l in lines {
                req.append_header("cookie", http::HeaderValue::from_bytes(l).unwrap())
                    .unwrap();
            }
            m.strip_cookie(&mut req).unwrap();
            req.headers
                .get_all("cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let cases: &[(&[&[u8]], &[&str])] = &[
            (&[b"\t authgate_session=v; a=1"], &["a=1"]),
            (&[b"authgate_session; a=1"], &["a=1"]),
            (&[b";;  ; __HOST-AUTHGATE_SESSION_TX_ab=1; a=b"], &["a=b"]),
            (&[b"a=b", b"c=d; authgate_session=x"], &["a=b; c=d"]),
            (&[b"authgate_session = x ; a=b"], &["a=b"]),
            (&[b"a=\xff\xfe", b"b=2"], &["b=2"]),
            (&[b"authgate_session=x"], &[]),
            // Nothing of ours: left exactly as sent, even with empty pieces.
            (&[b"a=1;; b=2", b"c=3"], &["a=1;; b=2", "c=3"]),
            (
                &[b"authgate_sessionx=1; xauthgate_session=2"],
                &["authgate_sessionx=1; xauthgate_session=2"],
            ),
        ];
        for (lines, want) in cases {
            assert_eq!(strip(lines), *want, "{lines:?}");
        }
    }

    /// The reader before its name prefilter: every piece through `Cookie::split_parse`.
    fn read_cookie_unfiltered(m: &SessionManager, headers: &HeaderMap, https: bool) -> CookieRead {
        let name = m.cookie_name(https);
        let mut found: Option<SessionId> = None;
        for h in headers.get_all(header::COOKIE) {
            let Ok(s) = h.to_str() else { continue };
            for c in Cookie::split_parse(s).flatten() {
                let Some(id) = (c.name() == name)
                    .then(|| m.keys.open_cookie(c.value()))
                    .flatten()
                else {
                    continue;
                };
                match &found {
                    Some(prev) if *prev != id => return CookieRead::Conflict,
                    _ => found = Some(id),
                }
            }
        }
        found.map_or(CookieRead::Absent, CookieRead::One)
    }

    proptest::proptest! {
        /// Valid, forged and look-alike session cookies among noise, in any spacing, order and
        /// number of headers: the reader answers exactly as the cookie crate's own splitter.
        #[test]
        fn name_prefilter_reads_as_the_full_parse(
            pieces in proptest::collection::vec((0..9usize, "[ \t]{0,2}", "[ \t]{0,2}", "[ -:<-~]{0,12}"), 0..8),
            breaks in proptest::collection::vec(proptest::bool::ANY, 8),
            https: bool,
        ) {
            let m = manager();
            let (a, b) = (SessionId::generate(), SessionId::generate());
            let (ca, cb) = (m.keys().cookie_value(&a), m.keys().cookie_value(&b));
            let mut lines = vec![String::new()];
            for (i, (kind, lead, trail, noise)) in pieces.iter().enumerate() {
                let piece = match kind {
                    0 => format!("authgate_session={ca}"),
                    1 => format!("__Host-authgate_session={ca}"),
                    2 => format!("__Host-authgate_session={cb}"),
                    3 => format!("authgate_session {trail}={lead}{ca}"),
                    4 => format!("authgate_sessionx={ca}"),
                    5 => format!("__Host-authgate_session=\"{ca}\""),
                    6 => format!("__Host-authgate_session={noise}"),
                    7 => format!("__Host-authgate_session{noise}"),
                    _ => noise.clone(),
                };
                let line = lines.last_mut().unwrap();
                line.push_str(&format!("{lead}{piece}{trail};"));
                if breaks[i] {
                    lines.push(String::new());
                }
            }
            let mut h = HeaderMap::new();
            for l in &lines {
                if let Ok(v) = l.parse() {
                    h.append(header::COOKIE, v);
                }
            }
            proptest::prop_assert!(m.read_cookie(&h, https) == read_cookie_unfiltered(&m, &h, https));
        }
    }

    #[tokio::test]
    async fn cached_copies_hold_tokens_only_when_asked() {
        let tokens = Tokens {
            access_token: Some("at".into()),
            refresh_token: Some("rt".into()),
            id_token: Some("idt".into()),
            access_token_expires_at: Some(1),
        };
        let claims = Claims {
            text: crate::identity::UserText::new("alice", "alice"),
            ..Claims::default()
        };
        for hold in [false, true] {
            let m = manager().holding_tokens(hold);
            let cookie = m
                .create("corp", claims.clone(), None, &tokens)
                .await
                .unwrap();
            let id = m.keys().open_cookie(&cookie).unwrap();
            let s = m.load(&id).await.unwrap().unwrap();
            // The copy the cache answers with next time.
            let cached = m.load(&id).await.unwrap().unwrap();
            assert!(s.same(&cached), "hold {hold}");
            assert_eq!(s.record.tokens.is_empty(), !hold, "hold {hold}");
            if hold {
                assert_eq!(m.tokens(&s).unwrap().access_token.as_deref(), Some("at"));
            }
            // Clear metadata stays either way: refresh decides on it without the tokens.
            assert_eq!(
                (s.record.access_expires_at, s.record.refreshable),
                (Some(unix_secs_nonzero(1)), true)
            );
            // Logout and refresh read the store, which has them either way.
            let reloaded = m.reload(&s.hash).await.unwrap().unwrap();
            let current = m.tokens(&reloaded).unwrap();
            assert_eq!(current.id_token.as_deref(), Some("idt"), "hold {hold}");
            assert_eq!(current.refresh_token.as_deref(), Some("rt"), "hold {hold}");
            m.destroy(&s.hash).await.unwrap();
            assert!(m.reload(&s.hash).await.unwrap().is_none());
        }
    }

    /// A record stored with a user a header would change (before sign-in refused such users)
    /// is not served, but sign-out still finds and ends it.
    #[tokio::test]
    async fn a_stored_user_that_cannot_be_sent_is_not_served() {
        let m = manager();
        for user in ["alice\u{7}", "alice\u{a0}", " alice"] {
            let claims = Claims {
                text: crate::identity::UserText::new("s-1", user),
                ..Claims::default()
            };
            let cookie = m
                .create("corp", claims, None, &Tokens::default())
                .await
                .unwrap();
            let id = m.keys().open_cookie(&cookie).unwrap();
            assert!(m.load(&id).await.unwrap().is_none(), "{user:?}");
            let whole = m.reload(&id.hash()).await.unwrap().unwrap();
            m.destroy(&whole.hash).await.unwrap();
            assert!(m.reload(&id.hash()).await.unwrap().is_none());
        }
    }

    fn with_other_claims() -> Claims {
        Claims {
            text: crate::identity::UserText::new("alice", "alice"),
            extra: [
                ("tenant", serde_json::json!("acme")),
                ("acr", serde_json::json!("1")),
                ("session_state", serde_json::json!("s-1")),
            ]
            .into_iter()
            .collect(),
            ..Claims::default()
        }
    }

    #[tokio::test]
    async fn cached_copies_keep_what_the_request_path_reads_and_the_store_keeps_all() {
        use crate::claimmap::ClaimsRead;
        let tokens = Tokens {
            refresh_token: Some("rt".into()),
            ..Tokens::default()
        };
        let claims = with_other_claims();
        let m = manager().keeping_claims(ClaimsRead::named(["tenant", "absent"]));
        let sid = Some("sid-1".to_string());
        let cookie = (m.create("corp", claims.clone(), sid, &tokens).await).unwrap();
        let id = m.keys().open_cookie(&cookie).unwrap();
        let s = m.load(&id).await.unwrap().unwrap();
        assert!(s.record.claims.extra.iter().map(|(k, _)| k).eq(["tenant"]));
        assert_eq!(
            s.record.sid, None,
            "back-channel logout reads the store's index"
        );
        assert!(!s.whole);
        // Never written back: it would lose what it does not hold.
        let refreshed = Claims {
            text: s.record.claims.text.with(|p| p.name = Some("Alice")),
            ..s.record.claims.clone()
        };
        assert!(matches!(
            m.update(&s, refreshed.clone(), &tokens).await,
            Err(StoreError::Corrupt(_))
        ));
        // The whole record for a refresh, which writes it back: nothing stored is lost.
        let whole = m.reload(&s.hash).await.unwrap().unwrap();
        assert!(whole.whole);
        assert_eq!(whole.record.claims.extra, claims.extra);
        assert_eq!(whole.record.sid.as_deref(), Some("sid-1"));
        let refreshed = Claims {
            text: whole.record.claims.text.with(|p| p.name = Some("Alice")),
            ..whole.record.claims.clone()
        };
        assert!(matches!(
            m.update(&whole, refreshed, &tokens).await.unwrap(),
            Update::Done(_)
        ));
        let after = m.reload(&s.hash).await.unwrap().unwrap();
        assert_eq!(after.record.claims.extra, claims.extra);
        assert_eq!(after.record.sid.as_deref(), Some("sid-1"));
        assert_eq!(after.record.claims.name(), Some("Alice"));
    }

    #[test]
    fn settings_that_change_what_a_copy_holds_renumber_the_manager() {
        let m = manager();
        let before = m.epoch;
        let m = m.holding_tokens(false);
        assert_ne!(m.epoch, before);
        let before = m.epoch;
        let m = m.keeping_claims(crate::claimmap::ClaimsRead::All);
        assert_ne!(m.epoch, before);
    }

    /// A copy trimmed under one config is never served under the next (a reload builds a new
    /// manager), whether the cache answers alone or the store confirms the copy unchanged
    /// (`cache_max_age = "0s"`: every entry only a candidate).
    #[tokio::test]
    async fn a_copy_trimmed_under_one_config_is_not_served_under_the_next() {
        use crate::claimmap::ClaimsRead;
        for max_age in [Duration::from_secs(60), Duration::ZERO] {
            let cache = Arc::new(SessionCache::new(max_age, 1000, true));
            let m = SessionManager {
                cache: cache.clone(),
                ..manager()
            }
            .keeping_claims(ClaimsRead::named(["tenant"]));
            let claims = with_other_claims();
            let tokens = Tokens::default();
            let cookie = m.create("corp", claims.clone(), None, &tokens).await;
            let id = m.keys().open_cookie(&cookie.unwrap()).unwrap();
            let s = m.load(&id).await.unwrap().unwrap();
            assert_eq!(s.record.claims.extra.len(), 1, "{max_age:?}");
            let again = m.load(&id).await.unwrap().unwrap();
            assert!(s.same(&again), "{max_age:?}: held and reused");
            let next = SessionManager {
                cache: cache.clone(),
                store: m.store.clone(),
                ..manager()
            }
            .keeping_claims(ClaimsRead::All);
            let s2 = next.load(&id).await.unwrap().unwrap();
            assert_eq!(s2.record.claims.extra, claims.extra, "{max_age:?}");
            assert!(!s.same(&s2));
        }
    }

    #[test]
    fn hex_round_trip() {
        let h = IdHash([0xab; 32]);
        assert_eq!(parse_hex32(&h.hex()), Some([0xab; 32]));
        assert_eq!(parse_hex32("zz"), None);
    }

    #[test]
    fn set_cookie_follows_the_cookie_options() {
        let attrs = |m: &SessionManager, https| {
            let v = m.set_cookie("v", https);
            let c = Cookie::parse(v.clone()).unwrap();
            (v, c.into_owned())
        };
        // Default: persistent, Path=/, Lax, __Host- over HTTPS.
        let (v, c) = attrs(&manager(), true);
        assert_eq!(c.name(), "__Host-authgate_session");
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.max_age(), Some(cookie::time::Duration::seconds(7200)));
        assert_eq!(c.same_site(), Some(SameSite::Lax));
        assert!(v.contains("Secure") && v.contains("HttpOnly"), "{v}");
        // A browser-session cookie: neither Max-Age nor Expires; clearing still expires it.
        let m = manager_with(|c| c.persistent = false);
        let (v, c) = attrs(&m, true);
        assert!(c.max_age().is_none() && c.expires().is_none(), "{v}");
        assert!(!v.contains("Max-Age") && !v.contains("Expires"), "{v}");
        assert!(m.clear_cookie(true).contains("Max-Age=0"));
        // SameSite=None, with Secure.
        let m = manager_with(|c| c.same_site = SameSite::None);
        let (v, c) = attrs(&m, true);
        assert_eq!(c.same_site(), Some(SameSite::None));
        assert!(v.contains("SameSite=None") && v.contains("Secure"), "{v}");
        // A path: no __Host- name (browsers reject it with Path other than /), over HTTPS
        // as over HTTP; the same name and path are read and cleared.
        let m = manager_with(|c| c.path = "/app/".into());
        let (v, c) = attrs(&m, true);
        assert_eq!(c.name(), "authgate_session", "{v}");
        assert_eq!(c.path(), Some("/app/"));
        assert_eq!(m.cookie_name(true), "authgate_session");
        let clear = Cookie::parse(m.clear_cookie(true)).unwrap();
        assert_eq!(
            (clear.name(), clear.path()),
            ("authgate_session", Some("/app/"))
        );
        let id = SessionId::generate();
        let h = cookies(&[&format!("authgate_session={}", m.keys().cookie_value(&id))]);
        assert!(m.read_cookie(&h, true) == CookieRead::One(id));
        // Its cookie is still the gateway's: stripped from upstream requests.
        assert_eq!(m.foreign_cookies(&h), "");
    }
}
