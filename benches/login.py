#!/usr/bin/env python3
"""Sign in to an authgate gateway against the auto-login test IdP; print the session cookie.

    python3 benches/login.py http://127.0.0.1:PORT    # prints "authgate_session=..."
    python3 benches/login.py --apache http://127.0.0.1:PORT
        # the same against Apache + mod_auth_openidc (redirect URI /oidc/callback): prints
        # "mod_auth_openidc_session=..."
    python3 benches/login.py --count 10000 --parallel 16 http://127.0.0.1:PORT
        # 10 000 distinct sessions (one real login each, 16 at a time): one cookie per line

Replicates `http_login` in tests/common/mod.rs: GET <gw>/.authgate/login?rd=/ -> 302 to the
IdP with the transaction cookie -> the IdP's redirects (303s, relative Locations resolved
against the current URL; a cookie jar for the IdP only) until one points at the gateway's
callback -> GET the callback on the gateway with the transaction cookie -> Set-Cookie
authgate_session=... Nothing follows redirects automatically. Exits non-zero on any surprise.
"""
import http.cookiejar
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # surface 3xx as HTTPError instead of following it



class LoopbackJar(http.cookiejar.CookieJar):
    """A jar that sends Secure cookies over http to loopback, as browsers do for
    localhost/127.0.0.1 (the test IdP marks its SameSite=None cookies Secure)."""

    def add_cookie_header(self, request):
        for c in self:
            c.secure = False
        super().add_cookie_header(request)

def opener(jar=None):
    handlers = [urllib.request.ProxyHandler({}), NoRedirect()]
    if jar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(jar))
    return urllib.request.build_opener(*handlers)


def get(op, url, headers=None):
    """(status, headers) of one GET, 3xx and 4xx included."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with op.open(req, timeout=TIMEOUT) as r:
            r.read()
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, e.headers


class LoginError(Exception):
    pass


def fail(msg):
    raise LoginError(msg)


def main():
    args = sys.argv[1:]
    apache, count, parallel = False, 1, 1
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--apache":
            apache = True
        elif flag in ("--count", "--parallel") and args and args[0].isdigit():
            value = int(args.pop(0))
            count, parallel = (value, parallel) if flag == "--count" else (count, value)
        else:
            args = []
            break
    if len(args) != 1 or count < 1 or parallel < 1:
        print("usage: login.py [--apache] [--count N] [--parallel P] http://127.0.0.1:PORT",
              file=sys.stderr)
        sys.exit(2)
    gw = args[0].rstrip("/")
    try:
        if count == 1:
            print(login(gw, apache))
            return
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(parallel) as pool:
            for cookie in pool.map(lambda _: login(gw, apache), range(count)):
                print(cookie)
    except LoginError as e:
        print(f"login.py: {e}", file=sys.stderr)
        sys.exit(1)


def login(gw, apache):
    """One complete sign-in; the session cookie as name=value."""
    gw_op = opener()
    idp_op = opener(LoopbackJar())

    if apache:
        start, callback, name = gw + "/bench", gw + "/oidc/callback", "mod_auth_openidc_session"
    else:
        start, callback, name = gw + "/.authgate/login?rd=/", gw + "/.authgate/callback", "authgate_session"
    status, h = get(gw_op, start, {"Accept": "text/html"})
    if status != 302:
        fail(f"{start} answered {status}, expected 302 to the provider")
    # The login transaction's cookies (authgate: *_tx_*; mod_auth_openidc: *_state_*).
    tx = [c.split(";", 1)[0] for c in h.get_all("Set-Cookie", []) if "_tx_" in c or "_state_" in c]
    if not tx:
        fail("login set no transaction cookie")
    url = urllib.parse.urljoin(start, h["Location"])
    for _ in range(10):
        status, h = get(idp_op, url)
        if status not in (301, 302, 303, 307, 308) or not h.get("Location"):
            fail(f"IdP answered {status} at {url}")
        url = urllib.parse.urljoin(url, h["Location"])
        if url.startswith(callback):
            break
    else:
        fail("the IdP never redirected back to the gateway")

    status, h = get(gw_op, url, {"Accept": "text/html", "Cookie": "; ".join(tx)})
    session = [c.split(";", 1)[0] for c in h.get_all("Set-Cookie", [])
               if c.startswith(name + "=") and not c.startswith(name + "=;")]
    if status // 100 != 3 or not session:
        fail(f"callback answered {status} without a session cookie")
    return session[0]


if __name__ == "__main__":
    main()
