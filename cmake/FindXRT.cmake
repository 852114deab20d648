# Finds XRT, the Xilinx runtime: Xilinx's own packages (/opt/xilinx/xrt, with a CMake config) or
# Debian's libxrt-dev (/usr, no usable config or pkg-config file). Defines XRT_FOUND and the
# imported target XRT::coreutil (the native C++ API: xrt::device, xrt::kernel, xrt::bo, ...).
find_package(XRT CONFIG QUIET HINTS $ENV{XILINX_XRT} /opt/xilinx/xrt NO_MODULE)
if(XRT_FOUND AND TARGET XRT::xrt_coreutil)
  add_library(XRT::coreutil INTERFACE IMPORTED)
  target_link_libraries(XRT::coreutil INTERFACE XRT::xrt_coreutil)
  # The 2.13 config target carries no include directory.
  target_include_directories(XRT::coreutil INTERFACE ${XRT_INCLUDE_DIRS})
  return()
endif()

find_path(XRT_INCLUDE_DIR xrt/xrt_device.h HINTS $ENV{XILINX_XRT}/include /opt/xilinx/xrt/include
          PATH_SUFFIXES xrt)
find_library(XRT_COREUTIL_LIBRARY xrt_coreutil HINTS $ENV{XILINX_XRT}/lib /opt/xilinx/xrt/lib)
find_library(XRT_UUID_LIBRARY uuid)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(XRT REQUIRED_VARS XRT_INCLUDE_DIR XRT_COREUTIL_LIBRARY XRT_UUID_LIBRARY)
if(XRT_FOUND AND NOT TARGET XRT::coreutil)
  add_library(XRT::coreutil INTERFACE IMPORTED)
  # Debian puts the headers in /usr/include/xrt; code includes <xrt/xrt_device.h> and <xrt/xclbin.h>.
  target_include_directories(XRT::coreutil INTERFACE ${XRT_INCLUDE_DIR})
  # xrt_uuid.h calls uuid_unparse_lower inline.
  target_link_libraries(XRT::coreutil INTERFACE ${XRT_COREUTIL_LIBRARY} ${XRT_UUID_LIBRARY} Threads::Threads)
endif()
