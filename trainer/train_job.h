// trainer/train_job.h — a whole `uio train` job as one library call: join the data-parallel job (if any),
// load the frozen base model and the token store, draw held-out documents, build a new compressor, resume
// from a checkpoint when asked (after checking that the checkpoint's settings match), install the stop
// handlers, train, and report. The CLI (tools/train.cpp) only parses options into a TrainJob.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "model/memory.h"
#include "model/weights.h"
#include "trainer/train.h"

namespace uio::trainer {

struct TrainJob {
  std::string model;  // base model (HF directory or .gguf), frozen
  model::LoadOptions load;  // dtype and device (with several ranks on CUDA: this rank's GPU is chosen here)
  std::string dtype_name = "float32";
  model::MemoryOptions memory;
  std::string data;  // token store (uio prepare)
  std::string sampler = "long_only";
  int64_t seq_len = 4096;  // tokens per training document, a multiple of segment_len
  // Synthetic documents mixed into the natural text (data/retrieval_task.h; beyond the paper's recipe, which
  // trains on natural text only): the shares of retrieval and auto-encoding documents (0, 0: natural text only).
  double retrieval_share = 0;
  double autoencode_share = 0;
  int64_t retrieval_max_facts = 4;  // facts planted per retrieval document: 1 to this
  int64_t retrieval_questions = 1;  // questions (and answers trained) per retrieval document
  int64_t retrieval_min_distance = 0;
  int64_t retrieval_min_digits = 4, retrieval_max_digits = 7;  // of each planted number
  bool retrieval_cue = false;  // questions end with the fact's own words (data::RetrievalOptions::cue)  // tokens every
                               // fact lies before its document's end at least (0: anywhere)
  // A curriculum's next stage: start from the weights of this compressor directory, checkpoint, export or
  // run directory (a fresh optimiser, schedule and data order; shapes must fit, other differences are
  // listed). Ignored when the run resumes from its own checkpoint. Empty: a new compressor.
  std::string init_memory;
  int64_t val_documents = 4;  // held-out documents scored before, during and after
  std::string resume;  // "", "auto" or a checkpoint directory
  std::string master_addr;  // data parallel rendezvous (empty: MASTER_ADDR)
  int64_t master_port = 0;  // (0: MASTER_PORT, else 29500)
  double dist_timeout_s = 600;
  bool overwrite = false;  // out_dir holds an earlier run and no resume is asked: delete it and start over
  TrainConfig train;  // loop, estimator, optimiser, schedule, checkpoints; config_text = the resolved INI
};

// Settings that shape the model or the data, as INI keys: a checkpoint continues only a run that agrees
// on all of them (the base model itself is checked by its fingerprint when the checkpoint is restored).
const std::vector<std::string>& resume_must_match();

// The checkpoint to continue from: `resume` "auto" (the newest complete checkpoint in
// <out_dir>/checkpoints; none: start fresh, said on `log`) or a checkpoint directory, verified, and its
// config.ini compared with `config_text` (must-match keys differing: an error listing them; others
// changed: listed on `log`). std::nullopt when `resume` is empty or auto found nothing.
std::optional<std::string> resume_checkpoint(const std::string& resume, const std::string& out_dir,
                                             const std::string& config_text, std::ostream& log);

// Checks every setting before any work starts (throws std::invalid_argument naming the key).
void check_train_job(const TrainJob& job);

// Runs the job; rank 0 reports on `out`. Returns the trainer's result (stopped: by a signal, after a
// checkpoint).
TrainResult run_train_job(TrainJob job, std::ostream& out);

}  // namespace uio::trainer
