/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The terminal prompt.  Everything on the card came from the agent, so it is
 * printed with control characters escaped: raw escape sequences could clear
 * the screen, move the cursor or recolour text, and so make a card say
 * something other than what it holds (a fake "risk: low", a hidden line of
 * the diff).  Bidirectional overrides are escaped for the same reason.
 */
#include "approval/tty.h"

#include "common/util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 300
#define DIFF_MAX_LINES	  40
#define DIFF_MAX_BYTES	  4000
#define ANSWER_MAX	  64

/* Length of the UTF-8 sequence at s and its code point, or 0 if malformed. */
static size_t utf8_decode(const unsigned char *s, unsigned *cp)
{
	size_t n;
	unsigned c;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2;
		c = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3;
		c = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4;
		c = s[0] & 0x07;
	} else {
		return 0;
	}
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	*cp = c;
	return n;
}

static bool is_bidi_control(unsigned cp)
{
	return (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200e ||
	       cp == 0x200f || cp == 0x061c;
}

void approval_print_sanitized(FILE *f, const char *s, bool keep_newlines)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		unsigned cp;
		size_t n = utf8_decode(p, &cp);

		if (n == 0) {
			fprintf(f, "\\x%02x", *p);
			p++;
			continue;
		}
		if (cp == '\n' && keep_newlines)
			fputc('\n', f);
		else if (cp == '\n')
			fputs("\\n", f);
		else if (cp == '\t')
			fputs(keep_newlines ? "\t" : "\\t", f);
		else if (cp < 0x20 || cp == 0x7f)
			fprintf(f, "\\x%02x", cp);
		else if ((cp >= 0x80 && cp < 0xa0) || is_bidi_control(cp))
			fprintf(f, "\\u%04x", cp);
		else
			fwrite(p, 1, n, f);
		p += n;
	}
}

static void print_field(FILE *f, const char *key, const json_t *v)
{
	cleanup_free char *dumped = NULL;

	fprintf(f, "  %-8s ", key);
	if (json_is_string(v)) {
		approval_print_sanitized(f, json_string_value(v), false);
	} else {
		dumped = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		approval_print_sanitized(f, dumped != NULL ? dumped : "?", false);
	}
	fputc('\n', f);
}

static size_t count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (*s == '\n' || s[1] == '\0')
			n++;
	return n;
}

/*
 * A file's content, indented and cut short: the card must fit on a screen.
 * What is cut is said, with the content's whole size when the card has it.
 */
static void print_block(FILE *f, const char *key, const json_t *v, const json_t *total_bytes)
{
	const char *s = json_string_value(v);
	size_t lines = 0;
	size_t total = 0;

	if (s == NULL) {
		print_field(f, key, v);
		return;
	}
	if (json_is_integer(total_bytes))
		fprintf(f, "  %s (%" JSON_INTEGER_FORMAT " bytes):\n", key,
			json_integer_value(total_bytes));
	else
		fprintf(f, "  %s:\n", key);
	while (*s != '\0') {
		const char *nl = strchr(s, '\n');
		size_t len = nl != NULL ? (size_t)(nl - s) : strlen(s);
		cleanup_free char *line = NULL;

		if (lines == DIFF_MAX_LINES || total + len > DIFF_MAX_BYTES) {
			size_t more = count_lines(s);
			fprintf(f, "    ... (%zu more line%s of the card's text not shown here)\n",
				more, more == 1 ? "" : "s");
			return;
		}
		line = xmalloc(len + 1);
		memcpy(line, s, len);
		line[len] = '\0';
		fputs("    | ", f);
		approval_print_sanitized(f, line, false);
		fputc('\n', f);
		lines++;
		total += len;
		s += len + (nl != NULL);
	}
}

/*
 * The card's body, the same for every channel (terminal, `approvals show`,
 * the elicitation message): the known fields first, every argument of the
 * action on its own line, then anything else the card holds, the file
 * contents, and what was left out and where the whole action is.
 */
static void render_card(FILE *f, const json_t *card)
{
	static const char *const fields[] = {"tool", "summary", "where",    "risk",    "reason",
					     "rule", "session", "channels", "approval"};
	static const char *const shown_later[] = {"args",	  "before",	 "after",
						  "before_bytes", "after_bytes", "omitted"};
	const char *key;
	json_t *v;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(fields); i++)
		if ((v = json_object_get(card, fields[i])) != NULL)
			print_field(f, strcmp(fields[i], "channels") == 0 ? "decide by" : fields[i],
				    v);
	if (json_is_object(v = json_object_get(card, "args"))) {
		json_t *arg;

		fputs("  arguments:\n", f);
		json_object_foreach(v, key, arg)
		{
			fputs("    ", f);
			print_field(f, key, arg);
		}
	} else if (v != NULL) {
		print_field(f, "args", v);
	}
	json_object_foreach((json_t *)card, key, v)
	{
		bool known = false;

		for (i = 0; i < ARRAY_SIZE(fields); i++)
			known = known || strcmp(key, fields[i]) == 0;
		for (i = 0; i < ARRAY_SIZE(shown_later); i++)
			known = known || strcmp(key, shown_later[i]) == 0;
		if (!known)
			print_field(f, key, v);
	}
	if ((v = json_object_get(card, "before")) != NULL)
		print_block(f, "before", v, json_object_get(card, "before_bytes"));
	if ((v = json_object_get(card, "after")) != NULL)
		print_block(f, "after", v, json_object_get(card, "after_bytes"));
	if (json_array_size(v = json_object_get(card, "omitted")) > 0) {
		json_t *item;

		fputs("  NOT SHOWN IN FULL:\n", f);
		json_array_foreach(v, i, item)
		{
			fputs("    - ", f);
			approval_print_sanitized(
			    f, json_string_value(item) ? json_string_value(item) : "?", false);
			fputc('\n', f);
		}
	}
	if (json_is_string(v = json_object_get(card, "approval"))) {
		fputs("  the whole action: luminaguard approvals show ", f);
		approval_print_sanitized(f, json_string_value(v), false);
		fputc('\n', f);
	}
}

char *approval_card_render(const json_t *card)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (f == NULL)
		return NULL;
	render_card(f, card);
	fclose(f);
	return text;
}

static void print_card(FILE *f, const json_t *card, unsigned timeout_s)
{
	fputs("\n=== LuminaGuard: this action needs your approval ===\n", f);
	render_card(f, card);
	fprintf(f, "Allow it? [y/N] (no answer in %u s is a no): ", timeout_s);
}

static int say(int fd, const char *s)
{
	return lg_write_all(fd, s, strlen(s)) < 0 ? -1 : 0;
}

/* 1: yes, 0: no, -1: neither. */
static int parse_answer(char *s)
{
	size_t len = strlen(s);

	while (len > 0 && isspace((unsigned char)s[len - 1]))
		s[--len] = '\0';
	while (isspace((unsigned char)*s))
		s++;
	if (strcasecmp(s, "y") == 0 || strcasecmp(s, "yes") == 0)
		return 1;
	if (*s == '\0' || strcasecmp(s, "n") == 0 || strcasecmp(s, "no") == 0)
		return 0;
	return -1;
}

int approval_tty_prompt_fds(const json_t *card, unsigned timeout_s, int in_fd, int out_fd,
			    int cancel_fd, bool *approved, struct lg_err **err)
{
	cleanup_free char *text = NULL;
	size_t text_len = 0;
	char answer[ANSWER_MAX + 1];
	size_t alen = 0;
	bool overlong = false;
	uint64_t deadline;
	FILE *f;

	*approved = false;
	if (timeout_s == 0)
		timeout_s = DEFAULT_TIMEOUT_S;
	f = open_memstream(&text, &text_len);
	if (f == NULL)
		return lg_err_sys(err, "open_memstream");
	print_card(f, card, timeout_s);
	fclose(f);

	/* Drop type-ahead: only a key pressed after the card is shown may answer it. */
	if (isatty(in_fd))
		tcflush(in_fd, TCIFLUSH);
	if (say(out_fd, text) < 0)
		return lg_err_sys(err, "write the approval prompt");
	deadline = lg_now_ms() + (uint64_t)timeout_s * 1000;
	for (;;) {
		struct pollfd p[2] = {{.fd = in_fd, .events = POLLIN},
				      {.fd = cancel_fd, .events = POLLIN}};
		uint64_t now = lg_now_ms();
		char c;
		ssize_t n;
		int r;

		if (now >= deadline) {
			say(out_fd, "\nno answer in time: denied\n");
			return 1;
		}
		r = poll(p, cancel_fd >= 0 ? 2 : 1, (int)(deadline - now));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return lg_err_sys(err, "poll the terminal");
		if (cancel_fd >= 0 && p[1].revents != 0) {
			say(out_fd, "\ninterrupted: denied\n");
			return lg_err_msg(err, ECANCELED, "interrupted");
		}
		if (r == 0)
			continue;
		/* One byte at a time: whatever follows the answer's line stays unread. */
		n = read(in_fd, &c, 1);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0)
			return lg_err_sys(err, "read the terminal");
		if (n == 0) {
			say(out_fd, "\n");
			return 0; /* end of input: no */
		}
		if (c != '\n') {
			if (alen < ANSWER_MAX)
				answer[alen++] = c;
			else
				overlong = true;
			continue;
		}
		answer[alen] = '\0';
		r = overlong ? -1 : parse_answer(answer);
		if (r >= 0) {
			*approved = r == 1;
			return 0;
		}
		alen = 0;
		overlong = false;
		say(out_fd, "Please answer y or n: ");
	}
}

int approval_tty_prompt(const json_t *card, unsigned timeout_s, bool *approved, struct lg_err **err)
{
	cleanup_close int fd = -1;

	*approved = false;
	/* O_NOCTTY: asking a question must never acquire a controlling terminal. */
	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return lg_err_msg(err, ENOTTY, "no terminal for --approve tty");
	return approval_tty_prompt_fds(card, timeout_s, fd, fd, -1, approved, err);
}
