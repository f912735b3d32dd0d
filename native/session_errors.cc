// How a session records a failure: the first one is the one reported, with its stage
// (stage.h), errno and a message naming the thread and process.
#include "session.h"

#include <errno.h>
#include <string.h>

#include <sstream>
#include <string>

namespace lockmem {
namespace detail {

bool Session::fail(Stage stage, int err, const std::string& message) {
  if (!error_->failed) {
    error_->failed = true;
    error_->stage = stage;
    error_->err = err;
    error_->message = message;
  }
  return false;
}

bool Session::failErrno(Stage stage, const char* what) {
  int err = errno;
  if (err == ESRCH) return failGone(stage);
  std::ostringstream msg;
  msg << what << " on thread " << tid_ << " of process " << spec_.pid << ": " << strerror(err);
  return fail(stage, err, msg.str());
}

bool Session::failGone(Stage stage) {
  phase_ = Phase::Gone;
  std::ostringstream msg;
  msg << "process " << spec_.pid << " (thread " << tid_ << ") exited while lockmem held it";
  return fail(stage, ESRCH, msg.str());
}

}  // namespace detail
}  // namespace lockmem
