/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The program bench-jail starts: says it runs by writing one byte to fd 3
 * (the pipe bench-jail passed) and exits.  Static, so the jail needs no
 * libraries for it and the figure is the jail's cost, not the loader's.
 */
#include <unistd.h>

int main(void)
{
	return write(3, "x", 1) == 1 ? 0 : 1;
}
