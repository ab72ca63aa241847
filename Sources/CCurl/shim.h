// Fixed-argument wrappers around libcurl's variadic calls, which Swift cannot call directly.
// Only the option types the etcd client uses are wrapped.
#ifndef TORUS_CCURL_SHIM_H
#define TORUS_CCURL_SHIM_H

#include <curl/curl.h>

/// The write callback type of CURLOPT_WRITEFUNCTION.
typedef size_t (*torus_curl_write_fn)(char *data, size_t size, size_t count, void *user);

/// curl_global_init(CURL_GLOBAL_ALL); call once, before any other thread uses libcurl.
static inline CURLcode torus_curl_global_init(void) { return curl_global_init(CURL_GLOBAL_ALL); }

static inline CURLcode torus_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

/// For options taking a pointer that libcurl keeps (CURLOPT_WRITEDATA, CURLOPT_ERRORBUFFER,
/// CURLOPT_HTTPHEADER): the pointee must outlive its use.
static inline CURLcode torus_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

/// For string options (libcurl copies them).
static inline CURLcode torus_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

/// Makes the next transfer a POST of a copy of `size` bytes at `data`.
static inline CURLcode torus_curl_set_post_body(CURL *handle, const void *data, curl_off_t size) {
    CURLcode code = curl_easy_setopt(handle, CURLOPT_POST, 1L);
    if (code == CURLE_OK) code = curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE_LARGE, size);
    if (code == CURLE_OK) code = curl_easy_setopt(handle, CURLOPT_COPYPOSTFIELDS, data);
    return code;
}

static inline CURLcode torus_curl_setopt_write_function(CURL *handle, torus_curl_write_fn fn) {
    return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, fn);
}

/// The progress callback type of CURLOPT_XFERINFOFUNCTION: non-zero aborts the transfer.
typedef int (*torus_curl_xferinfo_fn)(void *user, curl_off_t dltotal, curl_off_t dlnow,
                                      curl_off_t ultotal, curl_off_t ulnow);

/// Installs a progress callback (libcurl calls it about once a second even on an idle
/// transfer), which lets another thread stop a long-lived stream.
static inline CURLcode torus_curl_set_xferinfo(CURL *handle, torus_curl_xferinfo_fn fn, void *user) {
    CURLcode code = curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, fn);
    if (code == CURLE_OK) code = curl_easy_setopt(handle, CURLOPT_XFERINFODATA, user);
    if (code == CURLE_OK) code = curl_easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
    return code;
}

static inline CURLcode torus_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

#endif
