# Injected with -DCMAKE_PROJECT_INCLUDE=... when building an interface package
# against the ROS 2 wheels from PyPI (never needed on a normal ROS install).
#
# Why: the wheels' exported <pkg>__rosidl_generator_py targets carry include
# directories of the container the wheels were built in (/opt/python/...), so
# CMake fails with "includes non-existent path". We let the package configure
# unchanged and, at the end of its top directory, point those imported
# targets at this interpreter's Python and NumPy include directories.

find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)

function(_spatialthinker_fix_wheel_python_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    if(NOT _target MATCHES "__rosidl_generator_py$")
      continue()
    endif()
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    foreach(_dir IN LISTS _dirs)
      if(NOT _dir MATCHES "^/opt/python/")
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
    list(REMOVE_DUPLICATES _kept)
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _spatialthinker_fix_wheel_python_includes)
