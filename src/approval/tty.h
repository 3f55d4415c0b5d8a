/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The terminal channel of the approval cliff, for `luminaguard run --approve
 * tty`: the diff card is shown on the controlling terminal and the human
 * answers y or n there.  Silence until the timeout is a deny.
 */
#ifndef LG_APPROVAL_TTY_H
#define LG_APPROVAL_TTY_H

#include "common/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/*
 * Prints `card` (borrowed; the fields of approval_file()'s card) to
 * /dev/tty and reads the answer from it, waiting at most timeout_s seconds
 * (0: 300).  Returns 0 when the human answered (*approved: y/yes; n, no,
 * an empty line or end of input deny), 1 when the time ran out (*approved
 * is false), or <0 with *err: "no terminal for --approve tty" when there is
 * no controlling terminal.  Type-ahead from before the card appeared is
 * discarded, so a keystroke meant for something else is never an answer.
 */
int approval_tty_prompt(const json_t *card, unsigned timeout_s, bool *approved,
			struct lg_err **err);

/*
 * The same on given descriptors (borrowed): the card and prompt go to
 * out_fd, the answer is read from in_fd (a terminal or not).  When
 * cancel_fd (-1: none) becomes readable, e.g. lg_signals_fd(), the prompt
 * gives up with -ECANCELED ("interrupted") and *approved false.
 */
int approval_tty_prompt_fds(const json_t *card, unsigned timeout_s, int in_fd, int out_fd,
			    int cancel_fd, bool *approved, struct lg_err **err);

/*
 * Writes s to f with every control character (C0, DEL, C1) and every
 * bidirectional-override character escaped (\n, \t, \xHH, \uHHHH), newlines
 * kept when keep_newlines.  For printing text that came from an agent on a
 * person's terminal.  Also used by `luminaguard approvals list`.
 */
void approval_print_sanitized(FILE *f, const char *s, bool keep_newlines);

/*
 * The card as text, one field a line, every piece of agent text escaped as
 * approval_print_sanitized() does: what the terminal prompt shows below its
 * title, and what `approvals show` and the elicitation message show.  Lists
 * the card's "omitted" items and names `luminaguard approvals show ID` when
 * the card has its "approval" id.  New string, or NULL when out of memory.
 */
char *approval_card_render(const json_t *card);

#endif
