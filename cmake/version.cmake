# Writes OUT (a header defining NNDIST_GIT_DESCRIBE) with `git describe` of
# SRC, or FALLBACK outside a git checkout; the file is rewritten only when
# the text changes, so an unchanged source rebuilds nothing.
execute_process(COMMAND git -C "${SRC}" describe --always --dirty --tags
  OUTPUT_VARIABLE v OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR v STREQUAL "")
  set(v "${FALLBACK}")
endif()
set(text "#define NNDIST_GIT_DESCRIBE \"${v}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
