# Sourced by scripts/up.sh and scripts/test.sh: build the C and C++ code (llama.cpp above all) for this
# machine's CPU level. llama-cpp-sys-2 turns ggml's SIMD kernels on only from Rust's target features,
# which for a plain x86-64 build means SSE2; ggml's kernels also follow the C compiler's own target
# (`__AVX2__`, `__FMA__`, `__F16C__`), so compiling it for x86-64-v3 (AVX2, FMA, F16C, BMI2; every x86
# CPU since 2013-2015) makes the quantised matrix kernels about 2.5x faster with the Rust code untouched
# (candle already picks its kernels at run time). Only where this CPU has every feature of the level:
# the binary this builds runs here. A flag already set in the environment wins.
if [ "$(uname -m)" = x86_64 ] && [ -r /proc/cpuinfo ]; then
    cpu_flags="$(grep -m1 '^flags' /proc/cpuinfo)"
    x86_64_v3=yes
    for f in avx avx2 bmi1 bmi2 f16c fma abm movbe xsave; do
        case " $cpu_flags " in *" $f "*) ;; *) x86_64_v3=no ;; esac
    done
    if [ "$x86_64_v3" = yes ]; then
        export CFLAGS_x86_64_unknown_linux_gnu="${CFLAGS_x86_64_unknown_linux_gnu--march=x86-64-v3}"
        export CXXFLAGS_x86_64_unknown_linux_gnu="${CXXFLAGS_x86_64_unknown_linux_gnu--march=x86-64-v3}"
    fi
    unset cpu_flags x86_64_v3 f
fi
