#include <cstdio>
int main() { std::puts("medslip"); return 0; }
