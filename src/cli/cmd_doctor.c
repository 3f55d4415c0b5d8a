/* SPDX-License-Identifier: Apache-2.0 */
/* `luminaguard doctor`: what this host offers, what is missing, and the fix. */
#include "cli/commands.h"

#include "common/env.h"
#include "common/paths.h"
#include "common/util.h"
#include "hv/hv.h"
#include "image/image.h"
#include "jail/jail.h"
#include "lg-config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

/* First line of `prog --version`, or NULL. */
static char *first_line_of(const char *prog, const char *arg)
{
	int pipefd[2];
	char buf[256];
	ssize_t n;
	pid_t pid;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return NULL;
	pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return NULL;
	}
	if (pid == 0) {
		dup2(pipefd[1], STDOUT_FILENO);
		execlp(prog, prog, arg, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	n = lg_read_all(pipefd[0], buf, sizeof(buf) - 1);
	close(pipefd[0]);
	waitpid(pid, NULL, 0);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return xstrdup(buf);
}

int cmd_doctor(int argc, char **argv)
{
	struct lg_err *err = NULL;
	char why[256];
	enum hv_kvm_kind kind;
	enum hv_accel accel;
	const char *note = NULL;
	bool ok = true;

	if (argc > 1) {
		if (cli_is_help(argv[1])) {
			printf("Usage: luminaguard doctor\n\nSays which hypervisor backends and "
			       "accelerators work here, and why,\nand which guest images are "
			       "ready.  Exit status 0 when `luminaguard run` can work.\n");
			return 0;
		}
		fprintf(stderr, "luminaguard: doctor: unexpected argument '%s'\n", argv[1]);
		return 2;
	}

	printf("luminaguard %s\n", LG_VERSION);
	for (size_t i = 0; hv_backends[i] != NULL; i++) {
		const struct hv_backend *b = hv_backends[i];
		if (b->probe(&err) == 0) {
			cleanup_free char *ver = first_line_of(
			    lg_env()->qemu != NULL ? lg_env()->qemu : "qemu-system-x86_64",
			    "--version");
			printf("backend %-6s ok: %s (%s)\n", b->name, b->description,
			       ver ? ver : "version unknown");
		} else {
			printf("backend %-6s MISSING: %s\n", b->name, err->msg);
			lg_err_free(&err);
			ok = false;
		}
	}

	kind = hv_kvm_detect(why, sizeof(why));
	printf("kvm            %s: %s\n", hv_kvm_kind_name(kind), why);
	if (hv_accel_resolve(HV_ACCEL_AUTO, &accel, &note, &err) == 0)
		printf("accelerator    %s%s%s\n", hv_accel_name(accel), note ? " — " : "",
		       note ? note : "");
	else
		lg_err_free(&err);

	{
		/* The jail is not optional: without it VMs start only with --no-jail. */
		bool usable = false;
		cleanup_free char *jail = jail_describe_host(&usable);
		char *save = NULL;

		for (char *line = strtok_r(jail, "\n", &save); line != NULL;
		     line = strtok_r(NULL, "\n", &save))
			printf("jail           %s\n",
			       strncmp(line, "jail: ", 6) == 0 ? line + 6 : line);
		if (!usable)
			ok = false;
	}

	{
		cleanup_free char *agent = lg_find_helper("lg-agent");
		printf("guest agent    %s\n", agent ? agent : "MISSING (build the project)");
	}

	{
		cleanup_free char *dir = lg_images_dir();
		char **names = NULL;
		bool have_default = false;

		printf("images dir     %s\n", dir);
		if (lg_image_list(&names, &err) == 0) {
			for (size_t i = 0; names[i] != NULL; i++) {
				struct lg_image *img = NULL;
				if (strcmp(names[i], "default") == 0)
					have_default = true;
				if (lg_image_open(names[i], &img, &err) == 0) {
					if (img->kind == LG_IMAGE_ROOTFS)
						printf(
						    "image          %s: ok (rootfs, %u packages, "
						    "kernel %s)\n",
						    names[i], img->installed_packages,
						    img->kernel_version);
					else
						printf("image          %s: ok (initramfs, kernel "
						       "%s)\n",
						       names[i], img->kernel_version);
					lg_image_free(img);
				} else {
					printf("image          %s: BROKEN: %s\n", names[i],
					       err->msg);
					lg_err_free(&err);
				}
			}
			lg_strv_free(names);
		} else {
			lg_err_free(&err);
		}
		if (!have_default) {
			printf("image          default: MISSING — build it with: luminaguard image "
			       "build --packages python3\n");
			ok = false;
		}
	}
	return ok ? 0 : 1;
}
