/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging to stderr: plain text for people, or one JSON object per line
 * (LUMINAGUARD_LOG_FORMAT=json) for log collectors.  stdout is never used:
 * it belongs to the guest command's output (and later to MCP).
 */
#ifndef LG_COMMON_LOG_H
#define LG_COMMON_LOG_H

enum lg_log_level { LG_LOG_ERROR, LG_LOG_WARN, LG_LOG_INFO, LG_LOG_DEBUG };

/* Takes LUMINAGUARD_LOG and LUMINAGUARD_LOG_FORMAT from lg_env(), and logs
 * its warnings about bad values. */
void lg_log_init(void);
void lg_log_set_level(enum lg_log_level level);
enum lg_log_level lg_log_get_level(void);
/*
 * The request this thread works on (an HTTP API request id, at most 64
 * characters; NULL clears): its log lines carry it, as "request_id" in
 * JSON and "[req ID]" in text.  Copied into thread-local storage.
 */
void lg_log_set_request_id(const char *id);
void lg_log(enum lg_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define lg_error(...) lg_log(LG_LOG_ERROR, __VA_ARGS__)
#define lg_warn(...)  lg_log(LG_LOG_WARN, __VA_ARGS__)
#define lg_info(...)  lg_log(LG_LOG_INFO, __VA_ARGS__)
#define lg_debug(...) lg_log(LG_LOG_DEBUG, __VA_ARGS__)

#endif
