/* Runs a command and reports its peak resident memory.
 * Usage: peak_rss OUT_FILE COMMAND [ARGS...]; writes "<KiB>\n" to OUT_FILE and
 * exits with the command's status. A small launcher is needed because a child
 * started straight from the Python driver would inherit the driver's resident
 * pages in its high-water mark (ru_maxrss survives exec). */
#include <stdio.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
  struct rusage ru;
  int status;
  pid_t pid;
  FILE *out;
  if (argc < 3) {
    fprintf(stderr, "usage: peak_rss OUT_FILE COMMAND [ARGS...]\n");
    return 2;
  }
  pid = fork();
  if (pid < 0)
    return 2;
  if (pid == 0) {
    execvp(argv[2], argv + 2);
    perror("peak_rss: exec");
    _exit(127);
  }
  if (wait4(pid, &status, 0, &ru) != pid)
    return 2;
  out = fopen(argv[1], "w");
  if (out == NULL)
    return 2;
  fprintf(out, "%ld\n", ru.ru_maxrss);
  fclose(out);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
