#include <stdio.h>

const char st_cmd_version_help[] = "print the version and the optional parts built in";

int st_cmd_version(int argc, char **argv)
{
    (void)argc; (void)argv;
    printf("strata 0.1.0\n");
    return 0;
}
