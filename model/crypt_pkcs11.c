/*
 * crypt_pkcs11.c - the data key of an encrypted model unwrapped by a PKCS#11
 * token (st_crypt_pkcs11.h). The module is dlopen()ed and reached through
 * C_GetFunctionList only, so strata links no PKCS#11 library and any vendor's
 * module works; the header is p11-kit's (libp11-kit-dev). Without that
 * header at build time the URI parser still works and the token calls
 * return ST_ERR_UNSUPPORTED.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "st_crypt_pkcs11.h"

#define WRAP_MAGIC "STWRAP1\0"
#define WRAP_AAD   "strata wrapped model key v1 (AES-256-GCM)"

int st_pkcs11_is_uri(const char *s)
{
    return s && strncmp(s, "pkcs11:", 7) == 0;
}

static int hexv(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s + n) into dst (size cap); returns the length or -1
 * (bad escape, too long). Text values must not contain NUL. */
static long pct_decode(const char *s, size_t n, uint8_t *dst, size_t cap, int text)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n) return -1;
            hi = hexv(s[i + 1]);
            lo = hexv(s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = hi << 4 | lo;
            i += 2;
            if (text && c == 0) return -1;
        }
        if (o + (text ? 1 : 0) >= cap) return -1;
        dst[o++] = (uint8_t)c;
    }
    if (text) dst[o] = 0;
    return (long)o;
}

static int attr_is(const char *a, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(a, name, n) == 0;
}

st_status_t st_pkcs11_uri_parse(const char *uri, st_pkcs11_uri_t *out, st_error_t *err)
{
    st_pkcs11_uri_t u;
    const char *p, *q, *end;
    int have_token = 0, have_object = 0;

    if (!uri || !out)
        return st_error_set(err, ST_ERR_INVALID, "st_pkcs11_uri_parse: NULL argument");
    if (!st_pkcs11_is_uri(uri))
        return st_error_set(err, ST_ERR_FORMAT, "PKCS#11 URI must start with 'pkcs11:'");
    memset(&u, 0, sizeof(u));
    p = uri + 7;
    q = strchr(p, '?');
    end = q ? q : p + strlen(p);
    /* path: attr=value;attr=value */
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *e = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (e > p) {
            if (!eq)
                return st_error_set(err, ST_ERR_FORMAT, "PKCS#11 URI: path attribute '%.*s' has "
                                    "no '='", (int)(e - p), p);
            size_t an = (size_t)(eq - p), vn = (size_t)(e - eq - 1);
            long r = 0;
            if (attr_is(p, an, "token")) {
                r = pct_decode(eq + 1, vn, (uint8_t *)u.token, sizeof(u.token), 1);
                have_token = 1;
            } else if (attr_is(p, an, "object")) {
                r = pct_decode(eq + 1, vn, (uint8_t *)u.object, sizeof(u.object), 1);
                have_object = 1;
            } else if (attr_is(p, an, "id")) {
                r = pct_decode(eq + 1, vn, u.id, sizeof(u.id), 0);
                if (r >= 0) u.id_len = (size_t)r;
                if (r == 0) r = -1;
                else have_object = 1;
            }   /* other path attributes (manufacturer, serial, type, ...) are ignored */
            if (r < 0)
                return st_error_set(err, ST_ERR_FORMAT, "PKCS#11 URI: bad value for '%.*s' "
                                    "(percent escape or length)", (int)an, p);
        }
        p = e + 1;
    }
    /* query: attr=value&attr=value */
    if (q) {
        p = q + 1;
        end = p + strlen(p);
        while (p < end) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *e = amp ? amp : end;
            const char *eq = memchr(p, '=', (size_t)(e - p));
            if (e > p && eq) {
                size_t an = (size_t)(eq - p), vn = (size_t)(e - eq - 1);
                long r = 0;
                if (attr_is(p, an, "pin-value"))
                    return st_error_set(err, ST_ERR_INVALID, "PKCS#11 URI: pin-value is refused "
                                        "(the URI is passed on worker command lines); put the "
                                        "PIN in a file and use pin-source=file:/path");
                if (attr_is(p, an, "module-path"))
                    r = pct_decode(eq + 1, vn, (uint8_t *)u.module_path, sizeof(u.module_path), 1);
                else if (attr_is(p, an, "x-wrapped-key"))
                    r = pct_decode(eq + 1, vn, (uint8_t *)u.wrapped_key, sizeof(u.wrapped_key), 1);
                else if (attr_is(p, an, "pin-source")) {
                    r = pct_decode(eq + 1, vn, (uint8_t *)u.pin_source, sizeof(u.pin_source), 1);
                    if (r >= 0 && strncmp(u.pin_source, "file:", 5) == 0)
                        memmove(u.pin_source, u.pin_source + 5, strlen(u.pin_source + 5) + 1);
                    if (r >= 0 && !strncmp(u.pin_source, "//", 2))   /* file:///path */
                        memmove(u.pin_source, u.pin_source + 2, strlen(u.pin_source + 2) + 1);
                    if (r >= 0 && u.pin_source[0] != '/')
                        return st_error_set(err, ST_ERR_FORMAT, "PKCS#11 URI: pin-source must be "
                                            "file:/absolute/path");
                }
                if (r < 0)
                    return st_error_set(err, ST_ERR_FORMAT, "PKCS#11 URI: bad value for '%.*s' "
                                        "(percent escape or length)", (int)an, p);
            }
            p = e + 1;
        }
    }
    if (!have_token || !u.token[0])
        return st_error_set(err, ST_ERR_INVALID, "PKCS#11 URI: missing token= (the token label)");
    if (!have_object)
        return st_error_set(err, ST_ERR_INVALID, "PKCS#11 URI: missing object= (the wrapping "
                            "key's label) or id=");
    if (!u.module_path[0])
        return st_error_set(err, ST_ERR_INVALID, "PKCS#11 URI: missing module-path= (the "
                            "token's PKCS#11 library)");
    if (!u.wrapped_key[0])
        return st_error_set(err, ST_ERR_INVALID, "PKCS#11 URI: missing x-wrapped-key= (the "
                            "file holding the wrapped model key)");
    *out = u;
    return ST_OK;
}

static st_status_t read_small(const char *path, const char *what, uint8_t *buf, size_t cap,
                              size_t *n_out, st_error_t *err)
{
    size_t n = 0;
    ssize_t r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_error_set(err, ST_ERR_IO, "%s: cannot open %s: %s", path, what, strerror(errno));
    while (n < cap && (r = read(fd, buf + n, cap - n)) != 0) {
        if (r < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return st_error_set(err, ST_ERR_IO, "%s: cannot read %s: %s", path, what,
                                strerror(errno));
        }
        n += (size_t)r;
    }
    close(fd);
    *n_out = n;
    return ST_OK;
}

st_status_t st_pkcs11_pin_read(const char *path, char *pin, size_t size, st_error_t *err)
{
    uint8_t buf[256];
    size_t n = 0;
    st_status_t s;

    if (!path || !pin || size < 2)
        return st_error_set(err, ST_ERR_INVALID, "st_pkcs11_pin_read: bad argument");
    if ((s = read_small(path, "PIN file", buf, sizeof(buf), &n, err)) != ST_OK)
        return s;
    if (n > 0 && buf[n - 1] == '\n') n--;
    if (n > 0 && buf[n - 1] == '\r') n--;
    if (n == 0 || n >= size || memchr(buf, 0, n) || memchr(buf, '\n', n)) {
        explicit_bzero(buf, sizeof(buf));
        return st_error_set(err, ST_ERR_FORMAT, "%s: PIN file must hold one line of 1..%zu "
                            "bytes", path, size - 1);
    }
    memcpy(pin, buf, n);
    pin[n] = 0;
    explicit_bzero(buf, sizeof(buf));
    return ST_OK;
}

#ifndef ST_MODEL_HAVE_PKCS11

st_status_t st_pkcs11_key_unwrap(const char *uri, uint8_t key[32], st_error_t *err)
{
    (void)uri; (void)key;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "PKCS#11 keys: strata was built without "
                        "<p11-kit/pkcs11.h> (libp11-kit-dev)");
}

st_status_t st_pkcs11_key_wrap(const char *uri, const uint8_t key[32], st_error_t *err)
{
    (void)uri; (void)key;
    return st_error_set(err, ST_ERR_UNSUPPORTED, "PKCS#11 keys: strata was built without "
                        "<p11-kit/pkcs11.h> (libp11-kit-dev)");
}

#else

/* CRYPTOKI_GNU: the header's lower-case names (ck_rv_t, struct ck_attribute). */
#define CRYPTOKI_GNU 1
#include <p11-kit/pkcs11.h>

/* One open session on the token, logged in when a PIN was given. */
typedef struct {
    void                      *dl;
    struct ck_function_list   *f;
    int                        inited;
    ck_session_handle_t        sess;
    int                        has_sess, logged_in;
    ck_object_handle_t         keyobj;
} p11_t;

static const char *rv_str(ck_rv_t rv)
{
    switch (rv) {
    case CKR_PIN_INCORRECT:        return "CKR_PIN_INCORRECT";
    case CKR_PIN_LOCKED:           return "CKR_PIN_LOCKED";
    case CKR_PIN_LEN_RANGE:        return "CKR_PIN_LEN_RANGE";
    case CKR_ENCRYPTED_DATA_INVALID: return "CKR_ENCRYPTED_DATA_INVALID";
    case CKR_MECHANISM_INVALID:    return "CKR_MECHANISM_INVALID";
    case CKR_MECHANISM_PARAM_INVALID: return "CKR_MECHANISM_PARAM_INVALID";
    case CKR_KEY_FUNCTION_NOT_PERMITTED: return "CKR_KEY_FUNCTION_NOT_PERMITTED";
    case CKR_KEY_TYPE_INCONSISTENT: return "CKR_KEY_TYPE_INCONSISTENT";
    case CKR_USER_NOT_LOGGED_IN:   return "CKR_USER_NOT_LOGGED_IN";
    case CKR_TOKEN_NOT_PRESENT:    return "CKR_TOKEN_NOT_PRESENT";
    case CKR_DEVICE_ERROR:         return "CKR_DEVICE_ERROR";
    case CKR_GENERAL_ERROR:        return "CKR_GENERAL_ERROR";
    default:                       return "CKR_?";
    }
}

static void p11_close(p11_t *p)
{
    if (p->logged_in) p->f->C_Logout(p->sess);
    if (p->has_sess) p->f->C_CloseSession(p->sess);
    if (p->inited) p->f->C_Finalize(NULL);
    if (p->dl) dlclose(p->dl);
    memset(p, 0, sizeof(*p));
}

static st_status_t p11_open(const st_pkcs11_uri_t *u, p11_t *p, st_error_t *err)
{
    ck_rv_t (*get_list)(struct ck_function_list **);
    struct ck_c_initialize_args init;
    ck_slot_id_t slots[64], slot = 0;
    unsigned long n_slots = 64, n_found = 0;
    char pin[256];
    int found = 0;
    ck_rv_t rv;
    st_status_t s = ST_OK;

    memset(p, 0, sizeof(*p));
    pin[0] = 0;
    if (u->pin_source[0] && (s = st_pkcs11_pin_read(u->pin_source, pin, sizeof(pin), err)) != ST_OK)
        return s;
    p->dl = dlopen(u->module_path, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        s = st_error_set(err, ST_ERR_NOT_FOUND, "PKCS#11: cannot load module %s: %s",
                         u->module_path, dlerror());
        goto err;
    }
    *(void **)&get_list = dlsym(p->dl, "C_GetFunctionList");
    if (!get_list || get_list(&p->f) != CKR_OK || !p->f) {
        s = st_error_set(err, ST_ERR_BACKEND, "PKCS#11: %s is not a PKCS#11 module (no "
                         "C_GetFunctionList)", u->module_path);
        goto err;
    }
    /* OS locking: a module may be called from several threads of strata.
     * Key loads are short and sequential in every command today; one that
     * finds the module initialised by another leaves C_Finalize to it. */
    memset(&init, 0, sizeof(init));
    init.flags = CKF_OS_LOCKING_OK;
    rv = p->f->C_Initialize(&init);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        s = st_error_set(err, ST_ERR_BACKEND, "PKCS#11: C_Initialize failed in %s: %s (0x%lx)",
                         u->module_path, rv_str(rv), (unsigned long)rv);
        goto err;
    }
    p->inited = rv == CKR_OK;   /* someone else's initialisation is not ours to finalize */
    if ((rv = p->f->C_GetSlotList(1, slots, &n_slots)) != CKR_OK)
        n_slots = 0;
    for (unsigned long i = 0; i < n_slots && !found; i++) {
        struct ck_token_info ti;
        size_t ln = 32;
        if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK) continue;
        while (ln > 0 && ti.label[ln - 1] == ' ') ln--;
        if (ln == strlen(u->token) && memcmp(ti.label, u->token, ln) == 0) {
            slot = slots[i];
            found = 1;
        }
    }
    if (!found) {
        s = st_error_set(err, ST_ERR_NOT_FOUND, "PKCS#11: no token '%s' in %s", u->token,
                         u->module_path);
        goto err;
    }
    if ((rv = p->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &p->sess)) != CKR_OK) {
        s = st_error_set(err, ST_ERR_BACKEND, "PKCS#11: cannot open a session on token '%s': "
                         "%s (0x%lx)", u->token, rv_str(rv), (unsigned long)rv);
        goto err;
    }
    p->has_sess = 1;
    if (pin[0]) {
        rv = p->f->C_Login(p->sess, CKU_USER, (unsigned char *)pin, strlen(pin));
        if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LEN_RANGE) {
            s = st_error_set(err, ST_ERR_AUTH, "PKCS#11: wrong PIN for token '%s'", u->token);
            goto err;
        }
        if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
            s = st_error_set(err, ST_ERR_AUTH, "PKCS#11: login to token '%s' failed: %s (0x%lx)",
                             u->token, rv_str(rv), (unsigned long)rv);
            goto err;
        }
        p->logged_in = rv == CKR_OK;
    }
    {
        ck_object_class_t cls = CKO_SECRET_KEY;
        struct ck_attribute tmpl[3];
        unsigned long nt = 0;
        tmpl[nt].type = CKA_CLASS; tmpl[nt].value = &cls; tmpl[nt++].value_len = sizeof(cls);
        if (u->object[0]) {
            tmpl[nt].type = CKA_LABEL; tmpl[nt].value = (void *)u->object;
            tmpl[nt++].value_len = strlen(u->object);
        }
        if (u->id_len) {
            tmpl[nt].type = CKA_ID; tmpl[nt].value = (void *)u->id;
            tmpl[nt++].value_len = u->id_len;
        }
        if ((rv = p->f->C_FindObjectsInit(p->sess, tmpl, nt)) == CKR_OK) {
            ck_object_handle_t h[2];
            if (p->f->C_FindObjects(p->sess, h, 2, &n_found) != CKR_OK) n_found = 0;
            p->f->C_FindObjectsFinal(p->sess);
            if (n_found >= 1) p->keyobj = h[0];
        }
        if (n_found == 0) {
            s = st_error_set(err, ST_ERR_NOT_FOUND, "PKCS#11: no secret key object '%s' on token "
                             "'%s'%s", u->object[0] ? u->object : "(by id)", u->token,
                             pin[0] ? "" : " (no PIN given: private objects need pin-source=)");
            goto err;
        }
        if (n_found > 1) {
            s = st_error_set(err, ST_ERR_INVALID, "PKCS#11: more than one secret key '%s' on "
                             "token '%s': add id= to the URI", u->object, u->token);
            goto err;
        }
    }
    explicit_bzero(pin, sizeof(pin));
    return ST_OK;
err:
    explicit_bzero(pin, sizeof(pin));
    p11_close(p);
    return s;
}

static void gcm_mech(struct ck_mechanism *m, struct ck_gcm_params *g, uint8_t *iv)
{
    g->iv_ptr = iv;
    g->iv_len = 12;
    g->iv_bits = 96;
    g->aad_ptr = (unsigned char *)WRAP_AAD;
    g->aad_len = sizeof(WRAP_AAD) - 1;
    g->tag_bits = 128;
    m->mechanism = CKM_AES_GCM;
    m->parameter = g;
    m->parameter_len = sizeof(*g);
}

st_status_t st_pkcs11_key_unwrap(const char *uri, uint8_t key[32], st_error_t *err)
{
    st_pkcs11_uri_t u;
    uint8_t file[ST_PKCS11_WRAPPED_BYTES + 1], plain[64];
    struct ck_mechanism m;
    struct ck_gcm_params g;
    unsigned long plen = sizeof(plain);
    size_t n = 0;
    p11_t p;
    ck_rv_t rv;
    st_status_t s;

    if ((s = st_pkcs11_uri_parse(uri, &u, err)) != ST_OK)
        return s;
    if ((s = read_small(u.wrapped_key, "wrapped key file", file, sizeof(file), &n, err)) != ST_OK)
        return s;
    if (n != ST_PKCS11_WRAPPED_BYTES || memcmp(file, WRAP_MAGIC, 8) != 0)
        return st_error_set(err, ST_ERR_FORMAT, "%s: not a strata wrapped key file (%zu bytes, "
                            "expected %u starting 'STWRAP1')", u.wrapped_key, n,
                            ST_PKCS11_WRAPPED_BYTES);
    if ((s = p11_open(&u, &p, err)) != ST_OK)
        return s;
    gcm_mech(&m, &g, file + 8);
    if ((rv = p.f->C_DecryptInit(p.sess, &m, p.keyobj)) != CKR_OK) {
        s = st_error_set(err, ST_ERR_BACKEND, "PKCS#11: token '%s' cannot decrypt with key '%s' "
                         "(AES-GCM): %s (0x%lx)", u.token, u.object, rv_str(rv), (unsigned long)rv);
        goto out;
    }
    rv = p.f->C_Decrypt(p.sess, file + 20, 48, plain, &plen);
    if (rv != CKR_OK || plen != 32) {
        s = st_error_set(err, ST_ERR_AUTH, "%s: wrapped key failed authentication under token "
                         "'%s' key '%s' (tampered file or another wrapping key)", u.wrapped_key,
                         u.token, u.object);
        goto out;
    }
    memcpy(key, plain, 32);
out:
    explicit_bzero(plain, sizeof(plain));
    p11_close(&p);
    return s;
}

st_status_t st_pkcs11_key_wrap(const char *uri, const uint8_t key[32], st_error_t *err)
{
    st_pkcs11_uri_t u;
    uint8_t file[ST_PKCS11_WRAPPED_BYTES], in[32];
    struct ck_mechanism m;
    struct ck_gcm_params g;
    unsigned long clen = 48;
    p11_t p;
    ck_rv_t rv;
    st_status_t s;
    int fd = -1;

    if ((s = st_pkcs11_uri_parse(uri, &u, err)) != ST_OK)
        return s;
    memcpy(file, WRAP_MAGIC, 8);
    if (getrandom(file + 8, 12, 0) != 12)
        return st_error_set(err, ST_ERR_IO, "getrandom: %s", strerror(errno));
    if ((s = p11_open(&u, &p, err)) != ST_OK)
        return s;
    memcpy(in, key, 32);
    gcm_mech(&m, &g, file + 8);
    if ((rv = p.f->C_EncryptInit(p.sess, &m, p.keyobj)) != CKR_OK ||
        (rv = p.f->C_Encrypt(p.sess, in, 32, file + 20, &clen)) != CKR_OK || clen != 48) {
        s = st_error_set(err, ST_ERR_BACKEND, "PKCS#11: token '%s' cannot encrypt with key '%s' "
                         "(AES-GCM): %s (0x%lx)", u.token, u.object, rv_str(rv), (unsigned long)rv);
        goto out;
    }
    fd = open(u.wrapped_key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: cannot create wrapped key file: %s (never "
                         "overwritten)", u.wrapped_key, strerror(errno));
        goto out;
    }
    if (write(fd, file, sizeof(file)) != (ssize_t)sizeof(file) || fsync(fd) != 0) {
        s = st_error_set(err, ST_ERR_IO, "%s: write failed: %s", u.wrapped_key, strerror(errno));
        close(fd);
        unlink(u.wrapped_key);
        goto out;
    }
    close(fd);
out:
    explicit_bzero(in, sizeof(in));
    p11_close(&p);
    return s;
}

#endif /* ST_MODEL_HAVE_PKCS11 */
