# Finds cuDNN 9 and the cuDNN frontend's C++ headers: defines CUDNN_FOUND and the imported
# target CUDNN::frontend (headers of both, linking libcudnn).
#   cuDNN:     CUDNN_ROOT, the CUDA toolkit, the nvidia-cudnn-cu13/cu12 Python wheels
#              (nvidia/cudnn), then the system paths.
#   frontend:  CUDNN_FRONTEND_ROOT, then .deps/cudnn-frontend of the source tree (where
#              scripts/setup.sh and scripts/device_check.sh --pack-deps unpack the PyPI wheel
#              nvidia-cudnn-frontend), then the system paths.
set(_cudnn_hints ${CUDNN_ROOT} $ENV{CUDNN_ROOT} ${CUDAToolkit_LIBRARY_ROOT})
if(CUDAToolkit_INCLUDE_DIRS)
  foreach(_d IN LISTS CUDAToolkit_INCLUDE_DIRS)
    get_filename_component(_p "${_d}" DIRECTORY)
    list(APPEND _cudnn_hints "${_p}")
  endforeach()
endif()
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
  execute_process(
    COMMAND ${Python3_EXECUTABLE} -c "import nvidia.cudnn as c; print(list(c.__path__)[0])"
    OUTPUT_VARIABLE _wheel OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_wheel)
    list(APPEND _cudnn_hints "${_wheel}")
  endif()
endif()
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${_cudnn_hints} PATH_SUFFIXES include)
# libcudnn.so.9 alone: the wheels ship no unversioned link.
find_library(CUDNN_LIBRARY NAMES cudnn libcudnn.so.9 NAMES_PER_DIR
  HINTS ${_cudnn_hints} PATH_SUFFIXES lib lib64)
find_path(CUDNN_FRONTEND_INCLUDE_DIR cudnn_frontend.h
  HINTS ${CUDNN_FRONTEND_ROOT} $ENV{CUDNN_FRONTEND_ROOT}
        ${PROJECT_SOURCE_DIR}/.deps/cudnn-frontend
  PATH_SUFFIXES include)
if(CUDNN_INCLUDE_DIR AND EXISTS "${CUDNN_INCLUDE_DIR}/cudnn_version.h")
  file(STRINGS "${CUDNN_INCLUDE_DIR}/cudnn_version.h" _v REGEX "define CUDNN_MAJOR [0-9]+")
  string(REGEX REPLACE ".*CUDNN_MAJOR ([0-9]+).*" "\\1" CUDNN_VERSION_MAJOR "${_v}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(CUDNN
  REQUIRED_VARS CUDNN_LIBRARY CUDNN_INCLUDE_DIR CUDNN_FRONTEND_INCLUDE_DIR)
if(CUDNN_FOUND AND CUDNN_VERSION_MAJOR AND CUDNN_VERSION_MAJOR LESS 9)
  message(STATUS "cuDNN ${CUDNN_VERSION_MAJOR} found; the cuDNN path needs cuDNN 9")
  set(CUDNN_FOUND FALSE)
endif()
if(CUDNN_FOUND AND NOT TARGET CUDNN::frontend)
  add_library(CUDNN::frontend INTERFACE IMPORTED)
  set_target_properties(CUDNN::frontend PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CUDNN_FRONTEND_INCLUDE_DIR};${CUDNN_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${CUDNN_LIBRARY}")
endif()
mark_as_advanced(CUDNN_INCLUDE_DIR CUDNN_LIBRARY CUDNN_FRONTEND_INCLUDE_DIR)
