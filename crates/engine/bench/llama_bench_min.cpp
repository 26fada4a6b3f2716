// A minimal stand-in for llama.cpp's `llama-bench` (whose source is not vendored in llama-cpp-sys-2),
// measuring the same two tests the same way, directly on llama.cpp's C API and without Rust:
//   pp N: evaluate N random tokens in one batch;  tg N: decode N tokens one at a time.
// One warm-up run, then `-r` repetitions; the mean tokens/s is printed as JSON in llama-bench's
// shape (`n_prompt`, `n_gen`, `avg_ts`, `samples_ts`), so `veil bench engine --llama-bench PATH` can read it.
// Build: see docs/engine.md ("Measuring against llama.cpp").
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "llama.h"

static void quiet(ggml_log_level, const char *, void *) {}

static double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int main(int argc, char ** argv) {
    std::string model_path;
    int n_prompt = 128, n_gen = 64, threads = 1, reps = 5, fa = -1;  // fa -1: auto, as the engine
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        int v = std::atoi(argv[i + 1]);
        if (a == "-m") model_path = argv[i + 1];
        else if (a == "-p") n_prompt = v;
        else if (a == "-n") n_gen = v;
        else if (a == "-t") threads = v;
        else if (a == "-r") reps = v;
        else if (a == "-fa") fa = v;
        else if (a == "-o") {}  // always JSON
        else { fprintf(stderr, "unknown option %s\n", a.c_str()); return 2; }
    }
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.load_mode = LLAMA_LOAD_MODE_MMAP;
    llama_model * model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", model_path.c_str()); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    printf("[\n");
    for (int test = 0; test < 2; test++) {
        const int np = test == 0 ? n_prompt : 0;
        const int ng = test == 0 ? 0 : n_gen;
        llama_context_params cp = llama_context_default_params();
        cp.n_ctx = np + ng + 16;
        cp.n_batch = 2048;
        cp.n_ubatch = 512;
        cp.n_threads = threads;
        cp.n_threads_batch = threads;
        cp.flash_attn_type = fa < 0 ? LLAMA_FLASH_ATTN_TYPE_AUTO
                           : fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) { fprintf(stderr, "cannot create a context\n"); return 1; }
        std::vector<llama_token> tokens(std::max(np, 1));
        std::vector<double> samples;
        for (int r = -1; r < reps; r++) {  // r = -1 is the warm-up
            llama_memory_clear(llama_get_memory(ctx), false);
            const double t0 = now_s();
            if (np > 0) {
                for (int i = 0; i < np; i++) tokens[i] = std::rand() % n_vocab;
                if (llama_vocab_get_add_bos(vocab)) tokens[0] = llama_vocab_bos(vocab);
                if (llama_decode(ctx, llama_batch_get_one(tokens.data(), np))) { fprintf(stderr, "decode failed\n"); return 1; }
                llama_synchronize(ctx);
            }
            llama_token t = llama_vocab_get_add_bos(vocab) ? llama_vocab_bos(vocab) : std::rand() % n_vocab;
            for (int i = 0; i < ng; i++) {
                if (llama_decode(ctx, llama_batch_get_one(&t, 1))) { fprintf(stderr, "decode failed\n"); return 1; }
                llama_synchronize(ctx);
                t = std::rand() % n_vocab;
            }
            const double dt = now_s() - t0;
            if (r >= 0) samples.push_back((np + ng) / dt);
        }
        double sum = 0;
        std::string list;
        for (double v : samples) {
            sum += v;
            list += (list.empty() ? "" : ", ") + std::to_string(v);
        }
        printf("  {\"n_prompt\": %d, \"n_gen\": %d, \"n_threads\": %d, \"flash_attn\": %d, \"avg_ts\": %.3f, "
               "\"samples_ts\": [%s]}%s\n",
               np, ng, threads, fa, sum / reps, list.c_str(), test == 0 ? "," : "");
        llama_free(ctx);
    }
    printf("]\n");
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
